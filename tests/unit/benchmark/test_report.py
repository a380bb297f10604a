"""Medians, spreads and the table of the benchmark's report; the profile summary."""

from __future__ import annotations

import json
import os

from tests.benchmark import procstat, report
from tests.benchmark.profile import summary


def run(events_per_s: float, cpu: float, **extra) -> dict:
    return {
        "events_per_s": events_per_s,
        "cpu_us_per_event": cpu,
        "peak_rss_mb": 120.0,
        "requests_per_s": 300.0,
        "mean_batch": 50.0,
        "filtered": 0,
        **extra,
    }


def test_summary_gives_median_lowest_and_highest_of_the_figures_the_runs_have():
    found = report.summarize([run(10_000, 40), run(14_000, 38), run(11_000, 45, latency_ms={"p50": 80, "p99": 300})])
    assert found["events_per_s"] == {"median": 11_000, "min": 10_000, "max": 14_000, "runs": 3}
    assert found["cpu_us_per_event"]["median"] == 40
    assert found["latency_p99_ms"] == {"median": 300, "min": 300, "max": 300, "runs": 1}
    assert "share_of_bound" not in found


def test_the_table_shows_each_median_with_half_its_range_and_the_scenario_notes():
    runs = [
        run(10_000, 40, share_of_bound=0.6, bound_events_per_s=16_000),
        run(12_000, 44, share_of_bound=0.76, bound_events_per_s=16_000),
    ]
    results = {"scenarios": {"b": {"title": "50 ms", "runs": runs, "summary": report.summarize(runs)}}}
    text = report.table(results)
    header, rule, row = text.splitlines()
    assert header.startswith("scenario") and set(rule) <= {"-", " "}
    assert "11,000 ±9%" in row and "42.0 ±5%" in row
    assert "68% ±12% of the bound 16,000/s" in row


def test_the_notes_split_the_cpu_per_event_by_thread_group():
    by_thread = {"main": 11.0, "senders": 9.0, "librdkafka": 3.0, "other": 0.1}
    runs = [run(30_000, 23, cpu_us_per_event_by_thread=by_thread)]
    results = {"scenarios": {"a": {"title": "loopback", "runs": runs, "summary": report.summarize(runs)}}}
    row = report.table(results).splitlines()[2]
    assert "CPU µs/event: main 11.0, senders 9.0, librdkafka 3.0" in row


def test_the_baseline_row_names_it_and_has_no_split_by_the_connectors_threads():
    by_thread = {"main": 22.0, "other": 23.0, "librdkafka": 0.1}
    runs = [run(22_000, 45, cpu_us_per_event_by_thread=by_thread)]
    results = {
        "scenarios": {
            "q": {"title": "quixstreams", "baseline_threads": 8, "runs": runs, "summary": report.summarize(runs)}
        }
    }
    row = report.table(results).splitlines()[2]
    assert "quixstreams, 8 posting threads" in row and "CPU µs/event:" not in row


def test_the_threads_of_the_connector_are_grouped_by_their_kernel_names():
    pid = 100
    assert procstat.thread_group(pid, pid, "python3") == "main"
    assert procstat.thread_group(101, pid, "sender-7") == "senders"
    assert procstat.thread_group(102, pid, "rdk:broker1") == "librdkafka"
    assert procstat.thread_group(103, pid, "rdk:main") == "librdkafka"
    assert procstat.thread_group(104, pid, "lag-monitor") == "other"


def test_the_cpu_of_this_process_is_found_per_thread_group():
    found = procstat.thread_cpu_seconds(os.getpid())
    assert "main" in found and all(seconds >= 0 for seconds in found.values())


def test_profile_summary_counts_samples_by_function_package_and_connector_stage(tmp_path):
    raw = tmp_path / "profile.txt"
    raw.write_text(
        "run (threading.py:1);send (connector/sink/sender.py:5);post (httpx/_client.py:9);"
        "acquire (httpcore/_sync/connection_pool.py:3) 6\n"
        "_step (connector/pipeline.py:1);map (connector/mapping/mapper.py:4);decode (json/decoder.py:2) 3\n"
        "_step (connector/pipeline.py:1) 1\n"
    )
    found = summary(raw, seconds=0.2)
    assert found["samples"] == 10 and found["gil_busy"] == 0.5  # 10 of 20 samples taken
    assert found["stages"][0] == ("connector/sink/sender", 0.6)
    assert dict(found["areas"]) == {"httpcore": 0.6, "json": 0.3, "connector/pipeline": 0.1}
    assert found["functions"][1] == ("decode (json/decoder.py:2)", 0.3)


def test_the_result_file_holds_every_figure_rounded(tmp_path):
    path = tmp_path / "results" / "r.json"
    report.write({"scenarios": {"a": {"runs": [run(12_345.678912, 41.123456)]}}}, path)
    saved = json.loads(path.read_text())
    assert saved["scenarios"]["a"]["runs"][0]["events_per_s"] == 12_345.6789
