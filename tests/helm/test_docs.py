"""The chart's README: its values table is helm-docs' output for values.yaml, up to date,
and describes every value."""

from __future__ import annotations

import re

import yaml

from tests.support.helm import CHART
from tests.support.helm_docs import README, generated


def test_the_readme_is_what_helm_docs_writes():
    assert README.read_text() == generated(), (
        "helm/userflux-connector/README.md is not what helm-docs writes from README.md.gotmpl and values.yaml: "
        "run `make chart-docs`"
    )


def test_every_value_is_described_in_the_table():
    rows = _table()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    undescribed = [key for key, description in rows.items() if not description]
    assert undescribed == [], "values without a `# --` comment in values.yaml"
    # A value is covered by its own row, or by the row of the object it is part of
    # (config, resources, the probes: objects documented as a whole).
    uncovered = [leaf for leaf in _leaves(values) if not any(leaf == k or leaf.startswith(k + ".") for k in rows)]
    assert uncovered == [], "values the README's table does not describe"


def test_the_table_holds_no_value_values_yaml_lacks():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    paths = _leaves(values) | _objects(values)
    assert [key for key in _table() if key not in paths] == []


def _table() -> dict[str, str]:
    """Key -> description, from the README's generated values table."""
    table = README.read_text().split("\n## Values\n", 1)[1]
    rows = re.findall(r"^\| ([\w.]+) \| \w+ \| .*? \| (.*) \|$", table, re.M)
    assert rows, "no values table in the README"
    return {key: description.strip() for key, description in rows if key != "Key"}


def _leaves(tree: dict, prefix: str = "") -> set[str]:
    keys = set()
    for key, value in tree.items():
        path = prefix + key
        keys |= _leaves(value, path + ".") if isinstance(value, dict) and value else {path}
    return keys


def _objects(tree: dict, prefix: str = "") -> set[str]:
    keys = set()
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            keys |= {prefix + key} | _objects(value, prefix + key + ".")
    return keys
