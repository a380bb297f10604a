"""What the dashboard and the alert rules ask of the connector's metrics.

The dashboard (dashboards/userflux-connector.json), the alert rules (dashboards/alerts.yaml),
the metric table of docs/operations.md and what the running connector exports must name the same
metrics. This module reads all four so tests can compare them: a small PromQL lexer finds
the vector selectors (metric name and label matchers) in an expression, ignoring functions,
aggregations, keywords, label names, strings and durations.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re
from collections.abc import Iterable, Iterator
from typing import Any

import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "dashboards" / "userflux-connector.json"
ALERTS = REPO / "dashboards" / "alerts.yaml"
ALERT_TESTS = REPO / "tests" / "dashboards" / "alerts_test.yaml"
OPERATIONS = REPO / "docs" / "operations.md"  # the metric table
RUNBOOKS = REPO / "docs" / "runbooks.md"  # one section per alert

# Where `make` installs promtool; $PROMTOOL overrides it.
DEFAULT_PROMTOOL = pathlib.Path.home() / ".cache" / "userflux-connector" / "tools" / "promtool"

# Series Prometheus writes itself for every target; no exporter provides them.
PROMETHEUS_SERIES = frozenset(
    {
        "up",
        "scrape_duration_seconds",
        "scrape_samples_scraped",
        "scrape_samples_post_metric_relabeling",
        "scrape_series_added",
        "ALERTS",
        "ALERTS_FOR_STATE",
    }
)

# Grafana's built-in intervals, replaced by plausible values so promtool can parse a query.
GRAFANA_INTERVALS = {"__rate_interval": "5m", "__interval": "1m", "__range": "1h"}

HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")

_AGGREGATIONS = frozenset(
    {
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
        "limitk",
        "limit_ratio",
    }
)
_GROUPING = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
_KEYWORDS = frozenset({"and", "or", "unless", "atan2", "bool", "offset", "inf", "nan"})

_TOKEN = re.compile(
    r"""
    (?P<space>\s+|\#[^\n]*)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<number>(?:0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)(?:[a-zA-Z_]\w*)?)
  | (?P<ident>[a-zA-Z_:][\w:]*)
  | (?P<range>\[[^\]]*\])
  | (?P<variable>\$\w+|\$\{[^}]*\})
  | (?P<op>==|!=|>=|<=|=~|!~|[-+*/%^<>=,(){}@])
""",
    re.VERBOSE,
)


class PromQLSyntaxError(ValueError):
    """The expression holds something the lexer does not know (a stray character, a bad matcher).

    Grafana variables (`$var`, `${var}`) are read as tokens of their own: a duration such as
    `offset $__rate_interval` is one."""


@dataclasses.dataclass(frozen=True)
class Selector:
    """One vector selector: ``name{label op "value", ...}`` (name may come from ``__name__``)."""

    name: str | None
    matchers: tuple[tuple[str, str, str], ...]

    def matcher(self, label: str) -> tuple[str, str] | None:
        """(op, value) of the first matcher on ``label``, or None."""
        for name, op, value in self.matchers:
            if name == label:
                return op, value
        return None


def _tokens(expr: str) -> list[tuple[str, str]]:
    tokens, pos = [], 0
    while pos < len(expr):
        match = _TOKEN.match(expr, pos)
        if not match:
            raise PromQLSyntaxError(f"cannot read {expr[pos : pos + 20]!r} at {pos} in: {expr}")
        pos = match.end()
        if match.lastgroup != "space":
            tokens.append((match.lastgroup, match.group()))
    return tokens


def _unquote(text: str) -> str:
    body = text[1:-1]
    return body if text[0] == "`" else re.sub(r"\\(.)", r"\1", body)


def _matchers(tokens: list[tuple[str, str]], start: int) -> tuple[tuple[tuple[str, str, str], ...], int]:
    """Parse ``{a="b", c=~"d"}`` starting at the ``{``; return the matchers and the index after ``}``."""
    matchers, i = [], start + 1
    while tokens[i][1] != "}":
        if tokens[i][1] == ",":
            i += 1
            continue
        (kind, label), (_, op), (vkind, value) = tokens[i : i + 3]
        if kind not in ("ident", "string") or op not in ("=", "!=", "=~", "!~") or vkind != "string":
            raise PromQLSyntaxError(f"bad label matcher near {label!r}")
        matchers.append((label if kind == "ident" else _unquote(label), op, _unquote(value)))
        i += 3
    return tuple(matchers), i + 1


def _skip_parens(tokens: list[tuple[str, str]], i: int) -> int:
    """Index after the parenthesised list starting at ``i`` (a label list: no nesting)."""
    while tokens[i][1] != ")":
        i += 1
    return i + 1


def selectors(expr: str) -> list[Selector]:
    """Every vector selector in a PromQL expression, in order."""
    tokens = _tokens(expr)
    found, i = [], 0
    while i < len(tokens):
        kind, text = tokens[i]
        following = tokens[i + 1][1] if i + 1 < len(tokens) else None
        if kind == "ident":
            lowered = text.lower()
            if text in _GROUPING:
                i = _skip_parens(tokens, i + 1) if following == "(" else i + 1
            elif lowered == "offset":
                i += 2 if following != "-" else 3
            elif lowered in _KEYWORDS or following == "(" or (text in _AGGREGATIONS and following in ("by", "without")):
                i += 1  # a keyword, a function or an aggregation
            elif following == "{":
                matchers, i = _matchers(tokens, i + 1)
                found.append(Selector(text, matchers))
            else:
                found.append(Selector(text, ()))
                i += 1
        elif text == "{":
            matchers, i = _matchers(tokens, i)
            names = [value for label, op, value in matchers if label == "__name__" and op == "="]
            found.append(Selector(names[0] if names else None, matchers))
        else:
            i += 1
    return found


def metric_names(expr: str) -> set[str]:
    """The series names an expression reads, as written (``x_bucket`` stays ``x_bucket``)."""
    return {s.name for s in selectors(expr) if s.name}


def documented_name(series: str, histograms: Iterable[str]) -> str:
    """The name a series is documented under: a histogram's ``_bucket``, ``_sum`` and ``_count``
    series belong to the histogram; every other name is its own (``retries_total`` stays)."""
    histograms = set(histograms)
    for suffix in HISTOGRAM_SUFFIXES:
        if series.endswith(suffix) and series[: -len(suffix)] in histograms:
            return series[: -len(suffix)]
    return series


def substitute_grafana_variables(expr: str) -> str:
    """A dashboard query as Prometheus would receive it: ``$__rate_interval`` and friends become
    durations, every other ``$variable`` (always inside a regex matcher) becomes ``.*``."""

    def replace(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        return GRAFANA_INTERVALS.get(name, ".*")

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", replace, expr)


# --- the dashboard ----------------------------------------------------------------------


def load_dashboard(path: pathlib.Path = DASHBOARD) -> dict[str, Any]:
    return json.loads(path.read_text())


def dashboard_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows included, and the panels inside collapsed rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def variable_query(variable: dict[str, Any]) -> str | None:
    """The PromQL inside a query variable (``label_values(expr, label)`` or ``query_result(expr)``)."""
    if variable.get("type") != "query":
        return None
    query = variable.get("query")
    text = query.get("query", "") if isinstance(query, dict) else query or ""
    match = re.fullmatch(r"\s*label_values\((.*),\s*\w+\s*\)\s*", text, re.DOTALL)
    if match:
        return match.group(1)
    match = re.fullmatch(r"\s*query_result\((.*)\)\s*", text, re.DOTALL)
    return match.group(1) if match else None


def dashboard_expressions(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, expression) for every panel query and query variable."""
    found = []
    for panel in dashboard_panels(dashboard):
        for target in panel.get("targets", []):
            if target.get("expr"):
                found.append((f"panel {panel['id']} {panel['title']!r} query {target['refId']}", target["expr"]))
    for variable in dashboard.get("templating", {}).get("list", []):
        expr = variable_query(variable)
        if expr:
            found.append((f"variable ${variable['name']}", expr))
    return found


# --- the alert rules --------------------------------------------------------------------


def load_rules(path: pathlib.Path = ALERTS) -> list[dict[str, Any]]:
    """Every rule of a Prometheus rules file, with its group's name under ``group``."""
    document = yaml.safe_load(path.read_text())
    return [{**rule, "group": group["name"]} for group in document["groups"] for rule in group["rules"]]


def rule_expressions(rules: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(f"rule {rule.get('alert') or rule.get('record')}", rule["expr"]) for rule in rules]


# --- what is used, documented and exported ----------------------------------------------


def used_metric_names(expressions: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """Series name -> where it is used; Prometheus' own series (``up``) are left out."""
    used: dict[str, list[str]] = {}
    for where, expr in expressions:
        for name in metric_names(expr):
            if name not in PROMETHEUS_SERIES:
                used.setdefault(name, []).append(where)
    return used


@dataclasses.dataclass(frozen=True)
class DocumentedMetric:
    name: str
    type: str
    labels: tuple[str, ...]


def documented_metrics(text: str | None = None) -> dict[str, DocumentedMetric]:
    """docs/operations.md's metric table: rows like ``| `userflux_connector_x_total` | counter | `topic` | ... |``."""
    text = OPERATIONS.read_text() if text is None else text
    found = {}
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and re.fullmatch(r"`userflux_connector_\w+`", cells[0]):
            name = cells[0].strip("`")
            found[name] = DocumentedMetric(
                name, cells[1].split()[0] if cells[1] else "", tuple(re.findall(r"`(\w+)`", cells[2]))
            )
    return found


def exported_series(scrape: str) -> dict[str, str]:
    """Series name -> metric type, for everything a /metrics page declares or holds.

    A family with no sample yet (a labelled counter before its first increment) still
    counts: its ``# TYPE`` line is the promise that the series will exist.
    """
    series: dict[str, str] = {}
    for line in scrape.splitlines():
        match = re.match(r"#\s*TYPE\s+(\S+)\s+(\S+)", line)
        if match:
            name, kind = match.groups()
            if kind == "histogram":
                series.update({name + suffix: kind for suffix in HISTOGRAM_SUFFIXES})
            elif kind == "summary":
                series.update({name: kind, name + "_sum": kind, name + "_count": kind})
            else:
                series[name] = kind
        elif line and not line.startswith("#"):
            series.setdefault(re.match(r"[^{\s]+", line).group(), "untyped")
    return series


# --- promtool -----------------------------------------------------------------------------


class PromtoolMissing(RuntimeError):
    pass


def promtool_path() -> pathlib.Path:
    """promtool as `make` installs it ($PROMTOOL, else the tools cache); raises if absent."""
    path = pathlib.Path(os.environ.get("PROMTOOL") or DEFAULT_PROMTOOL)
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise PromtoolMissing(
            f"promtool not found at {path}: `make promtool` (or `make test`) installs it, "
            f"or set $PROMTOOL to a promtool binary"
        )
    return path
