"""Medians and spreads of the runs, the printed table, and the JSON result file."""

from __future__ import annotations

import json
import pathlib
import statistics
from collections.abc import Callable
from typing import Any

# (key in the summary, how to find it in a run's result)
FIGURES: dict[str, Callable[[dict], float | None]] = {
    "events_per_s": lambda r: r.get("events_per_s"),
    "cpu_us_per_event": lambda r: r.get("cpu_us_per_event"),
    "peak_rss_mb": lambda r: r.get("peak_rss_mb"),
    "latency_p50_ms": lambda r: r.get("latency_ms", {}).get("p50"),
    "latency_p99_ms": lambda r: r.get("latency_ms", {}).get("p99"),
    "requests_per_s": lambda r: r.get("requests_per_s"),
    "mean_batch": lambda r: r.get("mean_batch"),
    "mean_request_ms": lambda r: r.get("mean_request_ms"),
    "connector_cores": lambda r: r.get("connector_cores"),
    "sink_cores": lambda r: r.get("sink_cores"),
    "share_of_bound": lambda r: r.get("share_of_bound"),
    "outage_rss_mb": lambda r: r.get("outage", {}).get("rss_mb"),
    # Where the CPU goes: the pipeline loop, the senders and librdkafka's threads (procstat.thread_group).
    "cpu_us_main": lambda r: r.get("cpu_us_per_event_by_thread", {}).get("main"),
    "cpu_us_senders": lambda r: r.get("cpu_us_per_event_by_thread", {}).get("senders"),
    "cpu_us_librdkafka": lambda r: r.get("cpu_us_per_event_by_thread", {}).get("librdkafka"),
}
THREAD_FIGURES = (("cpu_us_main", "main"), ("cpu_us_senders", "senders"), ("cpu_us_librdkafka", "librdkafka"))


def summarize(runs: list[dict]) -> dict[str, dict[str, float]]:
    """For each figure the runs have: the median, the lowest and the highest."""
    found: dict[str, dict[str, float]] = {}
    for name, get in FIGURES.items():
        values = [v for v in map(get, runs) if v is not None]
        if values:
            found[name] = {
                "median": statistics.median(values),
                "min": min(values),
                "max": max(values),
                "runs": len(values),
            }
    return found


def _cell(summary: dict[str, dict[str, float]], name: str, digits: int = 0, percent: bool = False) -> str:
    figure = summary.get(name)
    if figure is None:
        return "-"
    median = figure["median"]
    text = f"{median:.{digits}%}" if percent else f"{median:,.{digits}f}"
    if figure["runs"] > 1 and median:
        text += f" ±{(figure['max'] - figure['min']) / 2 / abs(median):.0%}"
    return text


def _notes(scenario: dict) -> str:
    summary, notes = scenario["summary"], []
    if "share_of_bound" in summary:
        bound = scenario["runs"][0]["bound_events_per_s"]
        notes.append(f"{_cell(summary, 'share_of_bound', percent=True)} of the bound {bound:,.0f}/s")
    if "outage_rss_mb" in summary:
        notes.append(f"RSS {_cell(summary, 'outage_rss_mb')} MB while down")
    filtered = scenario["runs"][0]["filtered"]
    if filtered:
        notes.append(f"{filtered:,} filtered out")
    if scenario.get("baseline_threads"):  # its threads are not the connector's: no split by thread
        notes.append(f"quixstreams, {scenario['baseline_threads']} posting threads")
        split = []
    else:
        split = [f"{label} {summary[name]['median']:.1f}" for name, label in THREAD_FIGURES if name in summary]
    if split:
        notes.append("CPU µs/event: " + ", ".join(split))
    if "sink_cores" in summary:
        notes.append(f"sink {summary['sink_cores']['median']:.2f} cores")
    return "; ".join(notes)


def table(results: dict[str, Any]) -> str:
    header = ("scenario", "events/s", "CPU µs/event", "peak RSS MB", "p50 ms", "p99 ms", "req/s", "batch", "notes")
    rows = [header]
    for key, scenario in results["scenarios"].items():
        s = scenario["summary"]
        rows.append(
            (
                f"({key}) {scenario['title']}",
                _cell(s, "events_per_s"),
                _cell(s, "cpu_us_per_event", 1),
                _cell(s, "peak_rss_mb"),
                _cell(s, "latency_p50_ms"),
                _cell(s, "latency_p99_ms"),
                _cell(s, "requests_per_s"),
                _cell(s, "mean_batch", 1),
                _notes(scenario),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = []
    for n, row in enumerate(rows):
        cells = (
            [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:-1], widths[1:-1], strict=True)] + [row[-1]]
        )
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    found = results["scenarios"]
    if "a" in found and "v" in found:  # what reading Avro through the registry costs, beside JSON
        json_us = found["a"]["summary"]["cpu_us_per_event"]["median"]
        avro_us = found["v"]["summary"]["cpu_us_per_event"]["median"]
        lines.append(
            f"(v) against (a): {avro_us:.1f} against {json_us:.1f} µs CPU per event, "
            f"{avro_us - json_us:+.1f} µs for decoding Avro (medians)"
        )
    return "\n".join(lines)


def write(results: dict[str, Any], path: pathlib.Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_rounded(results), indent=2, default=str) + "\n")


def _rounded(value: Any) -> Any:
    """Floats to 4 decimals: the figures vary by far more than that from run to run."""
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rounded(v) for v in value]
    return value
