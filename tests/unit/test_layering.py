"""The package's layers: every import runs one way, from the driver down to what it uses.

Each top-level module or subpackage of ``connector`` is a unit; a unit may import only
units of a lower layer (imports inside a unit are its own business, but they must not go
round in a circle either). Imports under ``if TYPE_CHECKING:`` and inside functions count
the same: a dependency is a dependency.
"""

from __future__ import annotations

import ast
import pathlib
from collections import defaultdict

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[2] / "connector"

# Lowest first. docs/development.md draws the same picture.
LAYERS: list[set[str]] = [
    {"__init__", "errors", "logs", "threads", "validation"},  # the vocabulary: imports no other unit
    {"kafka", "metrics", "config"},  # what talking to Kafka shares; the metrics; the typed settings
    {
        "offsets",
        "formats",
        "health",
        "source",
        "group_offsets",
        "refetch",
    },  # formats: values and keys in their formats (the registry's)
    {"mapping", "batcher", "dead_letter", "lag", "checkpoint", "backpressure"},
    {"registry_wait"},  # reading waits for the schema registry (pauses like backpressure)
    {"invalid", "sink"},
    {"startup", "replay"},  # startup: the settings, mappings and TLS files, checked together; replay's parts
    {"pipeline"},  # the driver
    {"cli"},
    {"__main__"},
]
LAYER = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}


def module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported(path: pathlib.Path) -> set[str]:
    """The connector modules ``path`` imports (``from . import x`` names module x when
    there is one, else the package)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "connector":
                continue
            for alias in node.names:
                candidate = f"{target}.{alias.name}"
                found.add(candidate if _is_module(candidate) else target)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "connector"}
    return found


def _is_module(name: str) -> bool:
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def unit_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def graph() -> dict[str, set[str]]:
    return {module_name(path): imported(path) for path in sorted(PACKAGE.rglob("*.py"))}


def test_every_unit_has_a_layer():
    units = {unit_of(module) for module in graph()}
    assert units - LAYER.keys() == set(), "a new module or package: give it a layer in LAYERS"
    assert LAYER.keys() - units == set(), "LAYERS names a unit that is gone"


def wrong_way(edges: dict[str, set[str]]) -> list[str]:
    return sorted(
        f"{module} imports {target} ({unit_of(module)} is in layer {LAYER[unit_of(module)]}, "
        f"{unit_of(target)} in layer {LAYER[unit_of(target)]})"
        for module, targets in edges.items()
        for target in targets
        if unit_of(target) != unit_of(module) and LAYER[unit_of(target)] >= LAYER[unit_of(module)]
    )


def test_every_import_runs_down_the_layers():
    assert wrong_way(graph()) == []


def test_a_wrong_way_import_would_be_seen():
    # The check must be able to fail: config importing the mapping language (as it did), or
    # two units of one layer importing each other.
    assert wrong_way({"connector.config.load": {"connector.mapping.event", "connector.validation"}}) == [
        "connector.config.load imports connector.mapping.event (config is in layer 1, mapping in layer 3)"
    ]
    assert len(wrong_way({"connector.sink.tls": {"connector.invalid"}})) == 1
    assert "connector.validation" in imported(PACKAGE / "config" / "load.py")


def cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One circle of imports, if there is any."""
    state: dict[str, int] = defaultdict(int)  # 0 unseen, 1 on the path, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state[nxt] == 1:
                return path[path.index(nxt) :] + [nxt]
            if state[nxt] == 0:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if state[node] == 0:
            found = visit(node)
            if found:
                return found
    return None


def test_no_module_imports_itself_round_a_circle():
    edges = {module: {t for t in targets if t != module} for module, targets in graph().items()}
    assert cycle(edges) is None


@pytest.mark.parametrize(
    "edges, circle",
    [
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
        ({"a": {"b"}, "b": set()}, None),
    ],
)
def test_the_circle_finder_finds_circles(edges, circle):
    assert cycle(edges) == circle
