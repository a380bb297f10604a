"""A dashboard query as Grafana's Prometheus data source sends it to Prometheus.

No Grafana runs in the tests. This module does what Grafana does to a panel's ``expr``
before Prometheus sees it, in Grafana's two passes:

1. **The browser** (template variables). The panel's query runner computes the interval
   (``rangeUtil.calculateInterval``: the time range divided by the panel's max data points,
   rounded by ``roundInterval``, never below the panel's "Min interval" or else the data
   source's "Scrape interval", ``jsonData.timeInterval``, default ``15s``). Then
   ``templateSrv.replace(expr, scopedVars, interpolateQueryExpr)`` substitutes the dashboard
   variables, written ``$var``, ``${var}``, ``${var:format}``, ``[[var]]`` or
   ``[[var:format]]``. Without a format, the Prometheus data source's
   ``interpolateQueryExpr`` formats the value: a variable that is neither multi-value nor
   has "Include All" is only quote-escaped; otherwise each value is regex-escaped and
   several values become ``(a|b)``. "All" with a custom all value (the dashboard's
   ``allValue``) is inserted as it is, unescaped; "All" without one means every option.
   Grafana's own variables (``$__interval``, ``$__rate_interval``, ``$__range``...) are left
   for the backend.
2. **The backend** (``pkg/promlib``): ``models.Parse`` computes the query step and
   ``InterpolateVariables`` replaces the built-in variables:

   - ``$__interval``: the step. ``minInterval`` is the browser's interval (or the query's
     "Min step"); the step is ``range / maxDataPoints`` rounded by ``gtime.RoundInterval``
     unless that is below ``minInterval`` (then ``minInterval``), and never below
     ``range / 11000`` rounded (the "safe" resolution), written by ``gtime.FormatInterval``
     (its largest unit only: ``30s``, ``2m``).
   - ``$__rate_interval``: ``max($__interval + scrape, 4 * scrape)``, where ``$__interval``
     here is the browser's interval and ``scrape`` is the query's "Min step" if set, else
     the data source's scrape interval (``15s`` when unset); written as Go writes a
     ``time.Duration`` (``2m0s``, ``1m30s``).
   - ``$__range``: the time range in whole seconds (rounded), ``21600s``; ``$__range_s``
     and ``$__range_ms`` the bare numbers; ``$__interval_ms`` and ``$__rate_interval_ms``
     milliseconds.

Sources (Grafana's repository, read through the search tool):
``pkg/promlib/models/query.go`` (``calculatePrometheusInterval``, ``calculateRateInterval``,
``InterpolateVariables``), ``pkg/promlib/intervalv2/intervalv2.go`` (``Calculate``,
``CalculateSafeInterval``), grafana-plugin-sdk-go ``backend/gtime/gtime.go``
(``RoundInterval``, ``FormatInterval``, ``GetIntervalFrom``),
``packages/grafana-data/src/datetime/rangeutil.ts`` (``calculateInterval``,
``roundInterval``), ``public/app/features/query/state/PanelQueryRunner.ts`` (the low limit:
panel min interval, else ``ds.interval``), ``packages/grafana-prometheus/src/datasource.ts``
(``interval = jsonData.timeInterval || '15s'``; ``interpolateQueryExpr``;
``applyTemplateVariables`` leaves ``$__interval`` for the backend),
``packages/grafana-prometheus/src/escaping.ts`` (``prometheusRegularEscape``,
``prometheusSpecialRegexEscape``, classic behaviour: the
``prometheusSpecialCharsInLabelValues`` feature toggle off),
``public/app/features/variables/utils.ts`` (``variableRegex``) and
``public/app/features/templating/template_srv.ts`` (custom all values are not formatted).
The documented summary of the rate interval is in Grafana pull request #77234
("Prometheus: Fix $__rate_interval calculation").
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

# The value Grafana stores for "All".
ALL = "$__all"

# Grafana's default scrape interval for a Prometheus data source without one.
DEFAULT_SCRAPE_INTERVAL = "15s"
# pkg/promlib/models/query.go: safeResolution.
SAFE_RESOLUTION = 11000

# public/app/features/variables/utils.ts: $var | [[var]] / [[var:fmt]] | ${var} / ${var.path} / ${var:fmt}
VARIABLE_REGEX = re.compile(r"\$(\w+)|\[\[([\s\S]+?)(?::(\w+))?\]\]|\$\{(\w+)(?:\.([^:^\}]+))?(?::([^\}]+))?\}")

# The built-in variables the backend replaces, in the order InterpolateVariables replaces
# them (the longer names first: "$__interval_ms" before "$__interval").
BUILT_INS = (
    "__interval_ms",
    "__interval",
    "__range_ms",
    "__range_s",
    "__range",
    "__rate_interval_ms",
    "__rate_interval",
)


class GrafanaVariableError(ValueError):
    """A query this module cannot substitute as Grafana would (a bad duration, a format it
    does not implement)."""


# --- durations ---------------------------------------------------------------------------

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000, "y": 31_536_000_000}


def parse_duration_ms(text: str) -> int:
    """A Grafana interval string in milliseconds: ``30s``, ``1m30s``, ``500ms``; a bare
    number is seconds (as ``gtime.ParseIntervalStringToTimeDuration``)."""
    text = text.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1]
    if text.isdigit():
        return int(text) * 1000
    pos, total = 0, 0.0
    while pos < len(text):
        match = _DURATION.match(text, pos)
        if not match:
            raise GrafanaVariableError(f"not a duration: {text!r}")
        total += float(match.group(1)) * _UNIT_MS[match.group(2)]
        pos = match.end()
    if not text:
        raise GrafanaVariableError("empty duration")
    return int(round(total))


def format_interval(ms: int) -> str:
    """``gtime.FormatInterval``: the largest whole unit only (``90s`` is ``1m``)."""
    for unit, size in (
        ("y", 31_536_000_000),
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
        ("ms", 1),
    ):
        if ms >= size:
            return f"{ms // size}{unit}"
    return "1ms"


def go_duration(ms: int) -> str:
    """Go's ``time.Duration.String`` for a whole number of milliseconds: ``2m0s``,
    ``1h30m0s``, ``1.5s``, ``500ms``, ``0s``."""
    if ms == 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds = f"{rest // 1000}.{rest % 1000:03d}".rstrip("0").rstrip(".")
    text = f"{hours}h" if hours else ""
    if hours or minutes:
        text += f"{minutes}m"
    return text + seconds + "s"


# (upper bound in ms, rounded value in ms): the steps of both roundInterval functions.
_ROUNDING = (
    (10, 1),
    (15, 10),
    (35, 20),
    (75, 50),
    (150, 100),
    (350, 200),
    (750, 500),
    (1500, 1000),
    (3500, 2000),
    (7500, 5000),
    (12500, 10000),
    (17500, 15000),
    (25000, 20000),
    (45000, 30000),
    (90000, 60000),
    (210000, 120000),
    (450000, 300000),
    (750000, 600000),
    (1050000, 900000),
    (1500000, 1200000),
    (2700000, 1800000),
    (5400000, 3600000),
    (9000000, 7200000),
    (16200000, 10800000),
    (32400000, 21600000),
    (86400000, 43200000),
)


def round_interval_browser(ms: float) -> int:
    """rangeutil.ts ``roundInterval``: strict bounds (``interval < 10`` is 1 ms...)."""
    for bound, value in _ROUNDING:
        if ms < bound:
            return value
    for bound, value in ((604800000, 86400000), (1814400000, 604800000), (3628800000, 2592000000)):
        if ms < bound:
            return value
    return 31536000000


def round_interval_backend(ms: float) -> int:
    """gtime.go ``RoundInterval``: inclusive bounds (``interval <= 10ms`` is 1 ms...), with
    48 h extra step; only the last bound is strict."""
    for bound, value in _ROUNDING:
        if ms <= bound:
            return value
    for bound, value in ((172800000, 86400000), (604800000, 86400000), (1814400000, 604800000)):
        if ms <= bound:
            return value
    return 2592000000 if ms < 3628800000 else 31536000000


# --- the intervals of one query ------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Intervals:
    """What Grafana computes for one panel query over one time range."""

    range_ms: int
    interval_ms: int  # the browser's $__interval (request.intervalMs)
    step_ms: int  # the backend's step: $__interval in the query, and query_range's step
    rate_interval_ms: int  # $__rate_interval

    @property
    def range_s(self) -> int:
        return int(math.floor(self.range_ms / 1000 + 0.5))  # Go's math.Round (half away from zero)

    def built_ins(self) -> dict[str, str]:
        """The built-in variables' text, as InterpolateVariables writes it."""
        return {
            "__interval_ms": str(self.step_ms),
            "__interval": format_interval(self.step_ms),
            "__range_ms": str(self.range_ms),
            "__range_s": str(self.range_s),
            "__range": f"{self.range_s}s",
            "__rate_interval_ms": str(self.rate_interval_ms),
            "__rate_interval": go_duration(self.rate_interval_ms),
        }


def compute_intervals(
    range_s: float,
    max_data_points: int,
    scrape_interval: str | None = DEFAULT_SCRAPE_INTERVAL,
    min_interval: str | None = None,
    min_step: str | None = None,
) -> Intervals:
    """Grafana's intervals for a query over ``range_s`` seconds.

    ``max_data_points`` is the panel's "Max data points", by default its width in pixels
    (the dashboard JSON stores it only when set by hand). ``scrape_interval`` is the data
    source's "Scrape interval" (``jsonData.timeInterval``; None: unset, Grafana's 15 s).
    ``min_interval`` is the panel's "Min interval" (the browser's low limit) and
    ``min_step`` the query's "Min step" (``target.interval``, read by the backend); both
    None in our dashboard.
    """
    if max_data_points <= 0:
        raise GrafanaVariableError("max_data_points must be positive")
    range_ms = int(round(range_s * 1000))
    # Browser: PanelQueryRunner + rangeUtil.calculateInterval.
    low_limit = parse_duration_ms(min_interval or scrape_interval or DEFAULT_SCRAPE_INTERVAL)
    interval_ms = max(round_interval_browser(range_ms / max_data_points), low_limit)
    # Backend: calculatePrometheusInterval. A variable as "Min step" counts as none.
    step_text = None if (min_step or "").startswith("$") else min_step
    min_interval_ms = parse_duration_ms(step_text) if step_text and step_text != "0s" else interval_ms
    raw = range_ms / max_data_points
    calculated = min_interval_ms if raw < min_interval_ms else round_interval_backend(raw)
    safe = round_interval_backend(range_ms / SAFE_RESOLUTION)
    step_ms = max(calculated, safe)
    # InterpolateVariables + calculateRateInterval.
    if min_step in ("$__rate_interval", "${__rate_interval}"):
        scrape_ms = parse_duration_ms(scrape_interval or DEFAULT_SCRAPE_INTERVAL)
        step_ms = max(step_ms + scrape_ms, 4 * scrape_ms)
        rate_ms = step_ms
    else:
        if min_step in ("$__interval", "${__interval}"):
            scrape_ms = step_ms
        else:
            scrape_ms = parse_duration_ms(min_step or scrape_interval or DEFAULT_SCRAPE_INTERVAL)
        rate_ms = max(interval_ms + scrape_ms, 4 * scrape_ms)
    return Intervals(range_ms=range_ms, interval_ms=interval_ms, step_ms=step_ms, rate_interval_ms=rate_ms)


# --- template variables ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Variable:
    """One dashboard variable and its current selection.

    ``value`` is a string, a list of strings (multi-value), or ``ALL``. ``options`` are
    the values the variable offers, used for "All" when there is no ``all_value``.
    """

    name: str
    value: str | Sequence[str]
    multi: bool = False
    include_all: bool = False
    all_value: str | None = None
    options: tuple[str, ...] = ()

    def selected(self) -> str | list[str]:
        if isinstance(self.value, str):
            return self.value
        return list(self.value)

    def is_all(self) -> bool:
        value = self.value
        return value == ALL or (not isinstance(value, str) and len(value) > 0 and value[0] == ALL)


def regular_escape(value: str) -> str:
    """prometheusRegularEscape (classic): ``\\`` -> ``\\\\``, ``'`` -> ``\\\\'``."""
    return value.replace("\\", "\\\\").replace("'", "\\\\'")


def special_regex_escape(value: str) -> str:
    """prometheusSpecialRegexEscape (classic): a regex metacharacter gets two backslashes
    (one for the PromQL string, one for the regex), a backslash four."""
    value = value.replace("\\", "\\\\\\\\")
    return re.sub(r"[$^*{}\[\]+?.()|]", lambda m: "\\\\" + m.group(), value)


def grafana_regex_escape(value: str) -> str:
    """The ``regex`` format's escapeRegex: one backslash before a metacharacter."""
    return re.sub(r"[\\^$*+?.()|\[\]{}/]", lambda m: "\\" + m.group(), value)


def interpolate_query_expr(value: str | list[str], variable: Variable) -> str:
    """The Prometheus data source's default formatting of a variable's value."""
    if not variable.multi and not variable.include_all:
        if not isinstance(value, str):
            raise GrafanaVariableError(f"${variable.name} is single-value but has several values")
        return regular_escape(value)
    if isinstance(value, str):
        return special_regex_escape(value)
    escaped = [special_regex_escape(v) for v in value]
    if len(escaped) == 1:
        return escaped[0]
    return "(" + "|".join(escaped) + ")"


def _format(value: str | list[str], fmt: str, variable: Variable) -> str:
    """The few named formats (``${var:fmt}``) a Prometheus dashboard uses."""
    values = [value] if isinstance(value, str) else value
    if fmt == "raw":
        return ",".join(values)
    if fmt in ("csv",):
        return ",".join(values)
    if fmt == "pipe":
        return "|".join(values)
    if fmt == "regex":
        escaped = [grafana_regex_escape(v) for v in values]
        return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"
    raise GrafanaVariableError(f"${{{variable.name}:{fmt}}}: format {fmt!r} is not implemented here")


def substitute_variables(text: str, variables: Mapping[str, Variable]) -> str:
    """The browser's pass (templateSrv.replace with interpolateQueryExpr). Built-ins and
    unknown variables are left as they are, as Grafana leaves them."""

    def replace(match: re.Match) -> str:
        name = match.group(1) or match.group(2) or match.group(4)
        fmt = match.group(3) or match.group(6)
        if match.group(5):
            raise GrafanaVariableError(f"{match.group()}: field paths are not implemented here")
        variable = variables.get(name)
        if name.startswith("__") or variable is None:
            if name in ("__interval", "__interval_ms") and match.group(2):
                return "$" + name  # [[__interval]] is in the browser's scopedVars as "$__interval"
            return match.group()
        if variable.is_all():
            if variable.all_value is not None:
                if fmt in ("text", "percentencode", "queryparam"):
                    raise GrafanaVariableError(f"format {fmt!r} is not implemented here")
                return substitute_variables(variable.all_value, variables)  # custom all values: not formatted
            value: str | list[str] = list(variable.options)
        else:
            value = variable.selected()
        return _format(value, fmt, variable) if fmt else interpolate_query_expr(value, variable)

    return VARIABLE_REGEX.sub(replace, text)


def substitute_built_ins(expr: str, intervals: Intervals) -> str:
    """The backend's pass (InterpolateVariables): ``$__x`` and ``${__x}``, longest names first."""
    values = intervals.built_ins()
    for name in BUILT_INS:
        expr = expr.replace("$" + name, values[name])
    for name in BUILT_INS:
        expr = expr.replace("${" + name + "}", values[name])
    return expr


def interpolate(expr: str, variables: Mapping[str, Variable], intervals: Intervals) -> str:
    """A panel query as Prometheus receives it."""
    return substitute_built_ins(substitute_variables(expr, variables), intervals)


# --- a dashboard's variables -----------------------------------------------------------------


def dashboard_variables(
    dashboard: dict[str, Any],
    selections: Mapping[str, str | Sequence[str]],
    options: Mapping[str, Iterable[str]] | None = None,
) -> dict[str, Variable]:
    """The dashboard's template variables with the given selections (``ALL`` for All).

    A variable without a selection takes "All" when it offers it, else fails: a test says
    what it looks at. ``options`` gives each variable's offered values (what its
    ``label_values`` query returned), needed only for All without a custom all value.
    """
    options = options or {}
    found = {}
    for item in dashboard.get("templating", {}).get("list", []):
        name = item["name"]
        include_all = bool(item.get("includeAll"))
        if name in selections:
            value = selections[name]
        elif include_all:
            value = ALL
        else:
            raise GrafanaVariableError(f"no selection for ${name}, which has no All")
        found[name] = Variable(
            name=name,
            value=value if isinstance(value, str) else tuple(value),
            multi=bool(item.get("multi")),
            include_all=include_all,
            all_value=item.get("allValue") or None,
            options=tuple(options.get(name, ())),
        )
    unknown = set(selections) - set(found)
    if unknown:
        raise GrafanaVariableError(f"selections for variables the dashboard lacks: {sorted(unknown)}")
    return found


_LABEL_VALUES = re.compile(r"\s*label_values\((.*),\s*(\w+)\s*\)\s*", re.DOTALL)


def label_values_query(query: str) -> tuple[str | None, str]:
    """``label_values(selector, label)`` -> (selector, label); ``label_values(label)`` ->
    (None, label). Grafana asks Prometheus's label-values or series API with it."""
    match = _LABEL_VALUES.fullmatch(query)
    if match:
        return match.group(1).strip(), match.group(2)
    match = re.fullmatch(r"\s*label_values\(\s*(\w+)\s*\)\s*", query)
    if match:
        return None, match.group(1)
    raise GrafanaVariableError(f"not a label_values() query: {query!r}")
