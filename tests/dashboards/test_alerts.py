"""The alert rules: plain Prometheus rules, each with a runbook, checked and unit-tested by promtool."""

from __future__ import annotations

import re
import subprocess

import pytest
import yaml

from tests.support.docs import heading_anchors
from tests.support.monitoring import ALERT_TESTS, ALERTS, RUNBOOKS, load_rules

RUNBOOK_PREFIX = "https://github.com/userflux-connector/userflux-connector/blob/main/docs/runbooks.md#"

# What the observability issue asks for, one alert each.
EXPECTED_ALERTS = {
    "UserFluxConnectorDown",  # connector down
    "UserFluxConnectorNoReplicaUp",  # no replica up
    "UserFluxConnectorLagHighAndGrowing",
    "UserFluxConnectorStalled",  # lag but no deliveries
    "UserFluxConnectorErrorRatioHigh",
    "UserFluxConnectorKeyRefused",  # 401/403
    "UserFluxConnectorDeadLetters",  # dead letters appearing
    "UserFluxConnectorRetryStorm",
    "UserFluxConnectorOldestPendingTooOld",
    "UserFluxConnectorCommitsFailing",
}


@pytest.fixture(scope="module")
def rules() -> list[dict]:
    return load_rules()


def test_the_file_is_a_plain_prometheus_rules_file():
    document = yaml.safe_load(ALERTS.read_text())
    assert list(document) == ["groups"]
    for group in document["groups"]:
        assert set(group) <= {"name", "interval", "rules"} and group["rules"]


def test_the_alerts_are_those_the_issue_asks_for(rules):
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names))
    assert set(names) == EXPECTED_ALERTS


def test_every_alert_has_a_severity_a_summary_a_description_and_a_runbook(rules):
    for rule in rules:
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        assert set(rule["annotations"]) == {"summary", "description", "runbook_url"}, rule["alert"]
        assert all(text.strip() for text in rule["annotations"].values()), rule["alert"]


def test_every_runbook_url_points_at_a_runbooks_heading(rules):
    anchors = heading_anchors(RUNBOOKS.read_text())
    for rule in rules:
        url = rule["annotations"]["runbook_url"]
        assert url.startswith(RUNBOOK_PREFIX), url
        assert url.removeprefix(RUNBOOK_PREFIX) in anchors, f"{rule['alert']}: no heading in docs/runbooks.md for {url}"


def test_every_runbook_says_what_it_means_what_to_look_at_and_what_to_do(rules):
    runbooks = RUNBOOKS.read_text()
    for rule in rules:
        section = re.search(rf"^## {rule['alert']}\n(.*?)(?=^#|\Z)", runbooks, re.MULTILINE | re.DOTALL)
        assert section, f"no runbook section for {rule['alert']}"
        for part in ("**Means:**", "**Look at:**", "**Do:**"):
            assert part in section.group(1), f"{rule['alert']}: runbook without {part}"


def test_flapping_is_avoided_except_where_one_sample_is_the_news(rules):
    # Key refusal and dead letters look back over 15 and 10 minutes: they fire at once and
    # stay up. Everything else must hold for a while first.
    at_once = {"UserFluxConnectorKeyRefused", "UserFluxConnectorDeadLetters"}
    for rule in rules:
        if rule["alert"] in at_once:
            assert re.search(r"\[1[05]m\]", rule["expr"]), rule["alert"]
        else:
            assert re.fullmatch(r"\d+m", rule.get("for", "")) and int(rule["for"][:-1]) >= 5, rule["alert"]


def test_promtool_accepts_the_rules(promtool):
    result = subprocess.run(
        [promtool, "check", "rules", "--lint=all", "--lint-fatal", str(ALERTS)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(EXPECTED_ALERTS)} rules found" in result.stdout


def test_promtool_unit_tests_of_the_rules_pass(promtool):
    result = subprocess.run([promtool, "test", "rules", str(ALERT_TESTS)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_is_unit_tested_firing_and_not_firing(rules):
    tests = yaml.safe_load(ALERT_TESTS.read_text())
    assert tests["rule_files"] == ["../../dashboards/alerts.yaml"]
    firing, quiet = set(), set()
    for case in tests["tests"]:
        for check in case["alert_rule_test"]:
            (firing if check["exp_alerts"] else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in rules}
    assert names - firing == set(), "alerts never tested firing"
    assert names - quiet == set(), "alerts never tested quiet"
