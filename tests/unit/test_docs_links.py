"""Every link of the documentation resolves: README.md, docs/*.md, the chart's README, the
alerts' runbook_url and the project links in the chart's files.

A relative link must name a file of the repository and its #anchor a heading of that
file (as GitHub makes anchors); a link to this project's files on GitHub is checked
against the local file; any other http(s) link only for its form.
"""

from __future__ import annotations

import pathlib
import re

import pytest
import yaml

from tests.support.docs import PROJECT, PROJECT_BLOB, REPO, github_anchor, heading_anchors, links, problem

CHART = REPO / "helm" / "userflux-connector"
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), CHART / "README.md"]
RULE_FILES = [REPO / "dashboards" / "alerts.yaml", CHART / "files" / "alerts.yaml"]
ALERT_TESTS = REPO / "tests" / "dashboards" / "alerts_test.yaml"
CHART_FILES = [
    CHART / "values.yaml",
    CHART / "values.schema.json",
    CHART / "Chart.yaml",
    CHART / "templates" / "NOTES.txt",
]
RUNBOOKS = PROJECT_BLOB + "docs/runbooks.md#"


def _name(path: pathlib.Path) -> str:
    return str(path.relative_to(REPO))


def _problems(page: pathlib.Path) -> list[str]:
    return [
        f"{_name(page)}:{line}: {target}: {why}"
        for line, target in links(page.read_text())
        if (why := problem(page, target))
    ]


# --- the checker itself -------------------------------------------------------------------


def test_github_anchors():
    assert github_anchor("`on_invalid` and `dead_letter`") == "on_invalid-and-dead_letter"
    assert github_anchor("What is promised, exactly") == "what-is-promised-exactly"
    assert (
        github_anchor("The data's way through the stages and threads") == "the-datas-way-through-the-stages-and-threads"
    )
    assert github_anchor("`mappings` (required)") == "mappings-required"
    text = "# Title\n\n## Same\n\n### Same\n\n```\n## Same\n```\n\n## Same ##\n\n## Same-1\n"
    # GitHub numbers duplicates -1, -2, ... and skips an anchor a heading already took.
    assert heading_anchors(text) == {"title", "same", "same-1", "same-2", "same-1-1"}


def test_links_are_found_outside_code_only():
    text = (
        'See [a](a.md), ![b](b.png "title") and <https://example.com/c>.\n'
        "`[not](a link)` and ``[nor](this)``, and a [nested [text]](d.md#x).\n\n"
        "```sh\n[inside](a-fence.md)\n```\n\n[ref]: e.md\n"
    )
    assert links(text) == [(1, "a.md"), (1, "b.png"), (1, "https://example.com/c"), (2, "d.md#x"), (8, "e.md")]


def test_a_broken_link_or_anchor_is_reported(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A\n\n## Same\n\n## Same\n")
    (tmp_path / "config.yaml").write_text("x: 1\n")
    page = tmp_path / "docs" / "b.md"
    page.write_text("# B\n")
    resolves = [
        "a.md",
        "a.md#same",
        "a.md#same-1",
        "#b",
        "../config.yaml",
        "../config.yaml#L1",
        "../docs/",
        "https://example.com/x",
        PROJECT_BLOB + "docs/a.md#same-1",
        PROJECT + "tree/main/docs",
    ]
    for target in resolves:
        assert problem(page, target, tmp_path) is None, target
    broken = {
        "a.md#same-2": "no heading",
        "a.md#Same": "no heading",
        "#nope": "no heading",
        "missing.md": "no such file",
        "../config.yaml#x": "not Markdown",
        "../../outside.md": "outside the repository",
        PROJECT_BLOB + "docs/a.md#nope": "no heading",
        PROJECT_BLOB + "docs/missing.md": "no such file",
        "https:/no-host": "not a well-formed",
        "https://exa mple.com/": "not a well-formed",
        "mailto:someone@example.com": "scheme",
    }
    for target, why in broken.items():
        assert why in (problem(page, target, tmp_path) or ""), target


def test_a_broken_anchor_in_a_page_fails_the_page_check(tmp_path):
    (tmp_path / "docs").mkdir()
    page = tmp_path / "docs" / "page.md"
    page.write_text("# Page\n\nSee [the part](#the-part) and [its twin](#part-two).\n\n## Part two\n")
    found = [why for _, target in links(page.read_text()) if (why := problem(page, target, tmp_path))]
    assert found == ["no heading of docs/page.md has the anchor #the-part"]


# --- the documentation ----------------------------------------------------------------------


def test_the_pages_are_there():
    names = {page.name for page in PAGES if page.parent.name == "docs"}
    assert {
        "configuration.md",
        "mapping.md",
        "delivery.md",
        "operations.md",
        "runbooks.md",
        "kubernetes.md",
        "benchmark.md",
        "decisions.md",
        "development.md",
    } <= names
    # The README's map of the docs links every page.
    linked = {target for _, target in links((REPO / "README.md").read_text())}
    assert {f"docs/{name}" for name in names} <= linked


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_every_link_of_the_page_resolves(page):
    assert links(page.read_text()) or page.name == "README.md", "no link found: the extraction is broken"
    assert _problems(page) == []


@pytest.mark.parametrize("rules", RULE_FILES, ids=_name)
def test_every_runbook_url_finds_its_alert_s_section_in_docs_runbooks(rules):
    document = yaml.safe_load(rules.read_text())
    alerts = [rule for group in document["groups"] for rule in group["rules"] if "alert" in rule]
    assert alerts
    for rule in alerts:
        url = rule["annotations"]["runbook_url"]
        assert url == RUNBOOKS + github_anchor(rule["alert"]), rule["alert"]
        assert problem(rules, url) is None, f"{rule['alert']}: {problem(rules, url)}"


def test_the_promtool_tests_expect_the_same_runbook_urls():
    tests = yaml.safe_load(ALERT_TESTS.read_text())
    expected = [
        (alert["exp_labels"].get("alertname", check["alertname"]), alert["exp_annotations"]["runbook_url"])
        for case in tests["tests"]
        for check in case["alert_rule_test"]
        for alert in check["exp_alerts"]
        if "runbook_url" in alert.get("exp_annotations", {})
    ]
    assert expected
    for alert, url in expected:
        assert url == RUNBOOKS + github_anchor(alert), alert


def test_project_links_in_the_chart_s_files_resolve():
    urls = {path: re.findall(re.escape(PROJECT) + r"[^\s)\"'`]+", path.read_text()) for path in CHART_FILES}
    assert urls[CHART / "values.yaml"], "values.yaml no longer links the configuration reference"
    assert [
        (url, why) for path, found in urls.items() for url in found if (why := problem(path, url.rstrip(".,:;")))
    ] == []
