"""`helm package` makes a clean chart archive, and what it holds is what the tests checked:
the dashboard and the rules as real files, no CI scenarios, no README template, no link."""

from __future__ import annotations

import pathlib
import tarfile

import pytest
import yaml

from tests.support.helm import CHART, NAMESPACE, RELEASE, SCENARIOS, helm


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("package")
    result = helm("package", str(CHART), "--destination", str(out))
    assert result.stderr == "", result.stderr  # no warning
    (path,) = out.glob("userflux-connector-*.tgz")
    return path


def chart_files() -> dict[str, bytes]:
    """What the chart directory holds, minus what .helmignore leaves out."""
    ignored = ("ci/", "README.md.gotmpl")
    return {
        str(path.relative_to(CHART)): path.read_bytes()
        for path in sorted(CHART.rglob("*"))
        if path.is_file() and not str(path.relative_to(CHART)).startswith(ignored)
    }


def test_the_archive_holds_the_chart_s_files_as_regular_files(archive):
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
        assert [m.name for m in members if not m.isfile()] == []  # no link, no device, no directory entry
        packaged = {m.name.split("/", 1)[1]: tar.extractfile(m).read() for m in members}
    source = chart_files()
    # helm writes Chart.yaml anew (the same fields, its own layout); every other file as it is.
    assert yaml.safe_load(packaged.pop("Chart.yaml")) == yaml.safe_load(source.pop("Chart.yaml"))
    assert packaged == source
    assert {"files/alerts.yaml", "files/userflux-connector.json", "README.md", "values.schema.json"} <= set(packaged)
    assert not any(name.startswith("ci/") for name in packaged)


def test_the_packaged_chart_lints(archive):
    result = helm("lint", str(archive), "--strict", "--values", str(SCENARIOS["monitoring"]))
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("scenario", ["default", "monitoring", "keda"])
def test_the_packaged_chart_renders_like_the_directory(archive, scenario):
    values = str(SCENARIOS[scenario])
    packaged = helm("template", RELEASE, str(archive), "--namespace", NAMESPACE, "--values", values).stdout
    assert packaged == helm("template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--values", values).stdout
