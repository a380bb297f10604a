"""A test-only copy of the alert rules, on a time scale a test can wait for.

The shipped rules (dashboards/alerts.yaml, as the chart's PrometheusRule renders them)
wait minutes: ``for: 5m``, ``rate(...[5m])``, ``[15m:1m]`` subqueries, ``offset 10m``.
A test cannot, so it evaluates a copy rewritten mechanically, and only so:

1. **Every duration is divided by TIME_SCALE (60)**: minutes become seconds. That is each
   rule's ``for:``, every range and subquery step in its expression (``[5m]`` becomes
   ``[5s]``, ``[15m:1m]`` becomes ``[15s:1s]``) and every ``offset``. With a 1 s scrape and
   evaluation interval, a 5 s range holds about five samples, as a 5 m range holds ten at
   a 30 s scrape.
2. **The thresholds in THRESHOLDS are replaced**, each for the reason given there: a
   threshold in seconds is divided by the same scale; a threshold in messages is set to
   what the test's volume reaches. Ratios and per-second rates are left as they are:
   they do not depend on how long one waits.

Nothing else changes: names, labels, annotations and the shape of every expression are
the shipped ones, which ``differences`` checks.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

from tests.support.prometheus_operator import duration_seconds

TIME_SCALE = 60
# alert -> (the shipped comparison, the test's comparison, why)
THRESHOLDS: dict[str, tuple[str, str, str]] = {
    "UserFluxConnectorLagHighAndGrowing": (
        "> 10000",
        "> 200",
        "messages, not time: the test's outage builds up hundreds of messages of lag, not tens of thousands",
    ),
    "UserFluxConnectorOldestPendingTooOld": ("> 600", "> 10", "seconds: divided by TIME_SCALE like every duration"),
}

_RANGE = re.compile(r"\[([^\]]+)\]")
_OFFSET = re.compile(r"(\boffset\s+)(\w+)")


def scale_duration(duration: str) -> str:
    """``5m`` -> ``5s``, ``90s`` -> ``1500ms``: divided by TIME_SCALE, whole seconds when exact."""
    ms = round(duration_seconds(duration) * 1000) // TIME_SCALE
    if ms <= 0:
        raise ValueError(f"{duration!r} is too short to scale")
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def scale_expression(expr: str) -> str:
    """Every range, subquery step and offset of ``expr``, divided by TIME_SCALE."""

    def in_brackets(match: re.Match) -> str:
        parts = match.group(1).split(":")
        return "[" + ":".join(scale_duration(p.strip()) if p.strip() else "" for p in parts) + "]"

    expr = _RANGE.sub(in_brackets, expr)
    return _OFFSET.sub(lambda m: m.group(1) + scale_duration(m.group(2)), expr)


def fast_rules(groups: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The rule groups, rewritten as the module docstring says."""
    out = copy.deepcopy([dict(g) for g in groups])
    for group in out:
        if "interval" in group:
            group["interval"] = scale_duration(group["interval"])
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = scale_duration(rule["for"])
            expr = scale_expression(rule["expr"])
            if rule.get("alert") in THRESHOLDS:
                shipped, test, _ = THRESHOLDS[rule["alert"]]
                if expr.count(shipped) != 1:
                    raise ValueError(f"{rule['alert']}: expected {shipped!r} once in its expression:\n{expr}")
                expr = expr.replace(shipped, test)
            rule["expr"] = expr
    return out


def _shape(expr: str) -> str:
    """An expression with its durations and numbers taken out: what must not change."""
    expr = _RANGE.sub("[_]", expr)
    expr = _OFFSET.sub(r"\1_", expr)
    return re.sub(r"(?<![\w.])\d+(\.\d+)?(?![\w.])", "N", expr)


def differences(shipped: list[Mapping[str, Any]], fast: list[Mapping[str, Any]]) -> list[str]:
    """What the fast copy changes beyond the rewrite (empty when it is only the rewrite)."""
    found = []
    pairs = [
        (a, b) for ga, gb in zip(shipped, fast, strict=True) for a, b in zip(ga["rules"], gb["rules"], strict=True)
    ]
    for a, b in pairs:
        name = a.get("alert") or a.get("record")
        for key in set(a) | set(b):
            if key in ("for", "expr"):
                continue
            if a.get(key) != b.get(key):
                found.append(f"{name}: {key} changed")
        if ("for" in a) != ("for" in b) or ("for" in a and scale_duration(a["for"]) != b["for"]):
            found.append(f"{name}: for is not the shipped one scaled")
        if _shape(a["expr"]) != _shape(b["expr"]):
            found.append(f"{name}: the expression's shape changed")
        if name in THRESHOLDS and THRESHOLDS[name][1] not in b["expr"]:
            found.append(f"{name}: its test threshold is missing")
    return found
