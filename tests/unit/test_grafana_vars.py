"""How Grafana substitutes a dashboard's variables in Prometheus queries (tests/support/grafana_vars.py)."""

from __future__ import annotations

import pytest

from tests.support.grafana_vars import (
    ALL,
    GrafanaVariableError,
    Variable,
    compute_intervals,
    dashboard_variables,
    format_interval,
    go_duration,
    interpolate,
    label_values_query,
    parse_duration_ms,
    round_interval_backend,
    round_interval_browser,
    substitute_built_ins,
    substitute_variables,
)
from tests.support.monitoring import dashboard_expressions, load_dashboard

HOUR = 3600


# --- durations -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, ms",
    [
        ("30s", 30_000),
        ("1m", 60_000),
        ("1m30s", 90_000),
        ("500ms", 500),
        ("15", 15_000),
        ("<10s>", 10_000),
        ("2h", 7_200_000),
        ("1d", 86_400_000),
    ],
)
def test_durations_are_read_as_grafana_reads_them(text, ms):
    assert parse_duration_ms(text) == ms


@pytest.mark.parametrize("text", ["", "abc", "10x", "1m-"])
def test_a_bad_duration_is_refused(text):
    with pytest.raises(GrafanaVariableError):
        parse_duration_ms(text)


@pytest.mark.parametrize(
    "ms, text",
    [
        (0, "0s"),
        (500, "500ms"),
        (1000, "1s"),
        (1500, "1.5s"),
        (60_000, "1m0s"),
        (90_000, "1m30s"),
        (120_000, "2m0s"),
        (630_000, "10m30s"),
        (3_600_000, "1h0m0s"),
        (5_400_000, "1h30m0s"),
    ],
)
def test_the_rate_interval_is_written_as_go_writes_a_duration(ms, text):
    assert go_duration(ms) == text


@pytest.mark.parametrize(
    "ms, text",
    [
        (0, "1ms"),
        (20, "20ms"),
        (15_000, "15s"),
        (90_000, "1m"),
        (3_600_000, "1h"),
        (86_400_000, "1d"),
    ],
)
def test_the_interval_is_written_in_its_largest_unit(ms, text):
    assert format_interval(ms) == text


def test_the_browser_and_the_backend_round_at_the_bounds_differently():
    # rangeutil.ts uses "<", gtime.RoundInterval "<=".
    assert round_interval_browser(25_000) == 30_000
    assert round_interval_backend(25_000) == 20_000
    assert round_interval_browser(24_999) == round_interval_backend(24_999) == 20_000
    assert round_interval_browser(21_600) == round_interval_backend(21_600) == 20_000
    # 2 to 7 days: 1 day both; the backend alone has a 48 h step that also gives 1 day.
    assert round_interval_browser(100_000_000) == round_interval_backend(100_000_000) == 86_400_000
    assert round_interval_browser(4_000_000_000) == round_interval_backend(4_000_000_000) == 31_536_000_000


# --- intervals -------------------------------------------------------------------------------


def test_six_hours_at_a_30s_scrape_interval():
    # The dashboard's default range with the chart's default interval: 21.6 s per point is
    # rounded to 20 s and raised to the 30 s scrape interval.
    iv = compute_intervals(6 * HOUR, max_data_points=1000, scrape_interval="30s")
    assert (iv.interval_ms, iv.step_ms, iv.rate_interval_ms) == (30_000, 30_000, 120_000)
    assert iv.built_ins() == {
        "__interval": "30s",
        "__interval_ms": "30000",
        "__rate_interval": "2m0s",
        "__rate_interval_ms": "120000",
        "__range": "21600s",
        "__range_s": "21600",
        "__range_ms": "21600000",
    }


def test_a_data_source_without_a_scrape_interval_counts_15s():
    iv = compute_intervals(HOUR, max_data_points=1000, scrape_interval=None)
    assert (iv.interval_ms, iv.rate_interval_ms) == (15_000, 60_000)


def test_a_long_range_makes_the_interval_dominate_the_rate_interval():
    # 7 days over 1000 points: 604.8 s per point, rounded to 10 m; 10 m + 30 s > 4 x 30 s.
    iv = compute_intervals(7 * 24 * HOUR, max_data_points=1000, scrape_interval="30s")
    assert (iv.interval_ms, iv.step_ms) == (600_000, 600_000)
    assert iv.built_ins()["__rate_interval"] == "10m30s"
    assert iv.built_ins()["__interval"] == "10m"


def test_the_safe_resolution_bounds_the_step_from_below():
    # 11,000 points at most: 30 days over 100,000 max data points still steps 5 m.
    iv = compute_intervals(30 * 24 * HOUR, max_data_points=100_000, scrape_interval="1s")
    assert iv.step_ms == round_interval_backend(30 * 24 * HOUR * 1000 / 11000) == 300_000


def test_a_short_test_range_at_a_1s_scrape_interval():
    # What an integration test will use: 5 minutes, 1 s scrapes.
    iv = compute_intervals(300, max_data_points=1000, scrape_interval="1s")
    assert (iv.interval_ms, iv.step_ms, iv.rate_interval_ms) == (1000, 1000, 4000)
    assert iv.built_ins()["__rate_interval"] == "4s"


def test_a_min_step_replaces_the_scrape_interval_in_the_rate_interval():
    iv = compute_intervals(HOUR, max_data_points=1000, scrape_interval="15s", min_step="1m")
    assert iv.step_ms == 60_000
    assert iv.rate_interval_ms == max(15_000 + 60_000, 4 * 60_000)


def test_a_panel_min_interval_raises_the_browsers_interval():
    iv = compute_intervals(HOUR, max_data_points=1000, scrape_interval="15s", min_interval="1m")
    assert iv.interval_ms == 60_000
    assert iv.rate_interval_ms == 60_000 + 15_000


def test_rate_interval_as_min_step_makes_the_step_the_rate_interval():
    iv = compute_intervals(HOUR, max_data_points=1000, scrape_interval="15s", min_step="$__rate_interval")
    assert iv.step_ms == iv.rate_interval_ms == 60_000


# --- variables -------------------------------------------------------------------------------


def single(name, value):
    return Variable(name, value)


def multi(name, value, all_value=None, options=()):
    return Variable(name, value, multi=True, include_all=True, all_value=all_value, options=tuple(options))


def test_a_single_value_variable_is_only_quote_escaped():
    variables = {"ns": single("ns", "a.b'c")}
    assert substitute_variables('x{namespace="$ns"}', variables) == 'x{namespace="a.b\\\\\'c"}'


def test_a_multi_value_selection_becomes_an_escaped_alternation():
    variables = {"pod": multi("pod", ["p-1", "p.2"])}
    assert substitute_variables('x{pod=~"$pod"}', variables) == 'x{pod=~"(p-1|p\\\\.2)"}'


def test_one_value_of_a_multi_value_variable_has_no_parentheses():
    assert substitute_variables('x{pod=~"$pod"}', {"pod": multi("pod", ["p.1"])}) == 'x{pod=~"p\\\\.1"}'


def test_every_regex_metacharacter_and_the_backslash_are_escaped():
    value = "a$^*{}[]+?.()|b\\"
    expected = "a" + "".join("\\\\" + c for c in "$^*{}[]+?.()|") + "b" + "\\\\\\\\"
    assert substitute_variables("$v", {"v": multi("v", [value])}) == expected


def test_all_with_a_custom_all_value_is_inserted_unescaped():
    variables = {"pod": multi("pod", ALL, all_value=".*", options=["p.1"])}
    assert substitute_variables('x{pod=~"$pod"}', variables) == 'x{pod=~".*"}'


def test_all_without_a_custom_all_value_means_every_option():
    variables = {"pod": multi("pod", [ALL], options=["p.1", "p2"])}
    assert substitute_variables('x{pod=~"$pod"}', variables) == 'x{pod=~"(p\\\\.1|p2)"}'


@pytest.mark.parametrize("written", ["$pod", "${pod}", "[[pod]]"])
def test_the_three_syntaxes_name_the_same_variable(written):
    assert substitute_variables(f'x{{pod=~"{written}"}}', {"pod": multi("pod", ["a", "b"])}) == 'x{pod=~"(a|b)"}'


@pytest.mark.parametrize(
    "written, expected",
    [
        ("${pod:pipe}", "a.b|c"),
        ("${pod:raw}", "a.b,c"),
        ("[[pod:csv]]", "a.b,c"),
        ("${pod:regex}", "(a\\.b|c)"),
    ],
)
def test_named_formats(written, expected):
    assert substitute_variables(written, {"pod": multi("pod", ["a.b", "c"])}) == expected


def test_an_unimplemented_format_fails_loudly():
    with pytest.raises(GrafanaVariableError, match="glob"):
        substitute_variables("${pod:glob}", {"pod": multi("pod", ["a"])})


def test_unknown_variables_and_built_ins_are_left_to_the_next_step():
    text = 'rate(x{a="$unknown"}[$__rate_interval]) + y[${__interval}]'
    assert substitute_variables(text, {}) == text


def test_the_backend_replaces_the_built_ins_longest_name_first():
    iv = compute_intervals(6 * HOUR, max_data_points=1000, scrape_interval="30s")
    text = "$__interval_ms $__interval ${__rate_interval} $__rate_interval_ms $__range_s $__range ${__range_ms}"
    assert substitute_built_ins(text, iv) == "30000 30s 2m0s 120000 21600 21600s 21600000"


def test_a_dashboard_query_as_prometheus_receives_it():
    iv = compute_intervals(6 * HOUR, max_data_points=1000, scrape_interval="30s")
    variables = {
        "namespace": multi("namespace", ["streaming"], all_value=".*"),
        "pod": multi("pod", ALL, all_value=".*"),
    }
    expr = 'sum(rate(m_total{namespace=~"$namespace", pod=~"$pod"}[$__rate_interval]))'
    assert interpolate(expr, variables, iv) == 'sum(rate(m_total{namespace=~"streaming", pod=~".*"}[2m0s]))'


def test_the_repositorys_dashboard_leaves_no_variable_behind():
    dashboard = load_dashboard()
    variables = dashboard_variables(dashboard, {"datasource": "prom", "namespace": ["streaming"]})
    assert set(variables) == {"datasource", "namespace", "pod", "topic", "destination"}
    assert variables["pod"].is_all() and variables["pod"].all_value == ".*"
    iv = compute_intervals(6 * HOUR, max_data_points=1000, scrape_interval="30s")
    for where, expr in dashboard_expressions(dashboard):
        result = interpolate(expr, variables, iv)
        assert "$" not in result and "[[" not in result, f"{where}: {result}"


def test_a_dashboard_variable_without_a_selection_or_all_is_refused():
    with pytest.raises(GrafanaVariableError, match="datasource"):
        dashboard_variables(load_dashboard(), {})
    with pytest.raises(GrafanaVariableError, match="nosuch"):
        dashboard_variables(load_dashboard(), {"datasource": "prom", "nosuch": "x"})


def test_label_values_queries_are_split_into_selector_and_label():
    assert label_values_query('label_values(m{namespace=~"$namespace"}, pod)') == ('m{namespace=~"$namespace"}', "pod")
    assert label_values_query("label_values(namespace)") == (None, "namespace")
    with pytest.raises(GrafanaVariableError):
        label_values_query("query_result(up)")
