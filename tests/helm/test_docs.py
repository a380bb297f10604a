"""The chart's README documents every value in its table."""

from __future__ import annotations

import re

import yaml

from tests.support.helm import CHART

# Values whose contents are documented elsewhere (the connector's own configuration,
# Kubernetes objects passed as they are).
OPAQUE = {"config", "resources", "livenessProbe", "readinessProbe", "podSecurityContext", "securityContext"}


def test_every_value_is_in_the_readme_table():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert _leaves(values) - _documented() == set()


def test_the_readme_documents_no_value_that_does_not_exist():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    leaves = _leaves(values)
    assert {key for key in _documented() if key not in leaves and key not in OPAQUE} == set()


def _leaves(tree: dict, prefix: str = "") -> set[str]:
    keys = set()
    for key, value in tree.items():
        path = prefix + key
        if isinstance(value, dict) and value and path not in OPAQUE and not path.endswith(("labels", "Labels")):
            keys |= _leaves(value, path + ".")
        else:
            keys.add(path)
    return keys


def _documented() -> set[str]:
    """First-column keys of the Values table; `a.b.c`, `d` means a.b.c and a.b.d."""
    table = (CHART / "README.md").read_text().split("\n## Values\n", 1)[1]
    keys = set()
    for row in re.findall(r"^\| (`[^|]+) \|", table, re.M):
        parent = ""
        for key in re.findall(r"`([^`]+)`", row):
            if "." in key:
                parent = key.rsplit(".", 1)[0] + "."
                keys.add(key)
            else:
                keys.add(parent + key)
    return keys
