"""The fault suite: the delivery guarantee under crashes, outages, throttling, rebalances
and a refused key, with nothing lost. See tests/support/faults.py for what every scenario
checks at the end; `make soak` runs the same scenarios bigger and longer."""

from __future__ import annotations

import random
import re
import signal
import time

import pytest

from tests.integration.test_run import free_port
from tests.support.faults import Scenario, elapsed, report, scale
from tests.support.kafka_tools import committed, wait_until

pytestmark = pytest.mark.kafka


def test_1_kill_9_at_random_moments_loses_nothing(kafka_bootstrap, standin, tmp_path):
    s = Scenario("kill9", kafka_bootstrap, standin, tmp_path)
    kills = scale(10, 30)
    rng = random.Random()
    # Static membership: a restarted process takes its partitions back at once, instead of
    # waiting out the killed member's session.
    static = {"kafka": {"group.instance.id": f"{s.group}-member"}}
    s.events.start(per_second=scale(600, 2000), max_events=scale(60_000, 2_000_000))
    started = time.monotonic()
    for k in range(kills):
        before = len(s.standin.events())
        process = s.start(f"run{k}", **static)
        wait_until(lambda: len(s.standin.events()) > before, 60, "deliveries after the restart")
        time.sleep(rng.uniform(0.05, scale(0.8, 3.0)))  # mid-batch: requests are in flight
        process.process.kill()
        process.wait(10)
    produced = s.events.stop()
    final = s.start("final", **static)
    figures = s.finish(produced, s.duplicate_bound(kills))
    assert final.stop() == 0
    s.check_processes(0)
    report("1. kill -9 mid-batch", kills=kills, seconds=elapsed(started), **figures)


def test_2_a_long_outage_pauses_reading_bounds_memory_and_drains_after(kafka_bootstrap, standin, tmp_path):
    s = Scenario("outage", kafka_bootstrap, standin, tmp_path, latency_s=0.02,
                 userflux={"max_in_flight": 8})
    port = free_port()
    s.events.produce(2000)
    process = s.start("c", metrics={"enabled": True, "port": port})
    wait_until(lambda: len(s.standin.events()) >= 500, 60, "deliveries before the outage")
    outage_s = scale(6, 120)
    standin.fail_always(503)  # no Retry-After: the senders' own, shared, backoff
    requests_before = len(standin.requests())
    s.events.start(per_second=scale(3000, 10_000), max_events=scale(18_000, 1_000_000))
    started = time.monotonic()
    peak_rss = 0.0
    while time.monotonic() - started < outage_s:
        peak_rss = max(peak_rss, s.rss_mb(process))
        time.sleep(0.25)
    body = s.scrape(port)
    assert re.search(r"^userflux_connector_consumption_paused 1\.0$", body, re.M), "reading not paused"
    pending = float(re.search(r"^userflux_connector_pending_messages (\S+)$", body, re.M).group(1))
    assert pending <= 1000
    outage_requests = len(standin.requests()) - requests_before
    standin.heal()
    produced = s.events.stop()
    figures = s.finish(produced, duplicates_allowed=0)  # a 503 stores nothing: nothing to repeat
    # Failing together: after 3 failures in a row one probe at a time, on one backoff schedule
    # (50 ms doubling to 500 ms; each wait at least half of that). Each of the 8 senders on
    # its own schedule would send about 8 times as many.
    rounds = 5 + outage_s / 0.25
    assert outage_requests <= 8 + 3 + rounds + 2, f"{outage_requests} requests in a {outage_s}s outage"
    assert peak_rss < 200, f"peak RSS {peak_rss:.0f} MB"
    assert process.stop() == 0
    s.check_processes(0)
    report("2. UserFlux 503 for a long stretch", outage_s=outage_s, backlog=len(produced.valid),
           outage_requests=outage_requests, peak_rss_mb=round(peak_rss), **figures)


def test_6_three_instances_churning_commit_only_what_they_own(kafka_bootstrap, standin, tmp_path):
    s = Scenario("churn", kafka_bootstrap, standin, tmp_path, partitions=6)
    s.events.start(per_second=scale(600, 2000), max_events=scale(30_000, 1_000_000))
    started = time.monotonic()
    pause = scale(2.0, 15.0)

    def delivering(process) -> None:
        process.wait_for_log("assigned", timeout_s=60)
        before = len(s.standin.events())
        wait_until(lambda: len(s.standin.events()) > before, 60, "deliveries")
        time.sleep(pause)

    a, b = s.start("a"), s.start("b")
    delivering(a)
    c = s.start("c")  # joins late
    delivering(c)
    a.process.kill()  # killed: its partitions move after its session times out
    a.wait(10)
    b.wait_for_log("assigned", timeout_s=60)
    time.sleep(pause)
    assert b.stop() == 0  # stops cleanly, committing what it delivered
    d = s.start("d")  # one more joins
    delivering(d)
    produced = s.events.stop()
    figures = s.finish(produced, s.duplicate_bound(4))
    assert c.stop() == 0 and d.stop() == 0
    s.check_processes(0)
    for process in (a, b, c, d):
        assert_commits_only_owned(process.stderr, s.topic)
    report("6. three instances: late join, kill -9, SIGTERM, another join", seconds=elapsed(started), **figures)


def assert_commits_only_owned(log: str, topic: str) -> None:
    """Replay one instance's log: every commit asked names only partitions it owned then."""
    owned: set[int] = set()
    part = re.compile(re.escape(topic) + r"\[(\d+)\]")
    commits = 0
    for line in log.splitlines():
        if ": assigned " in line:
            owned |= {int(p) for p in part.findall(line)}
        elif ": released " in line:
            owned -= {int(p) for p in part.findall(line)}
        elif re.search(r"connector\.checkpoint: commit( \(async\))? .*: asked$", line):
            asked = {int(p) for p in part.findall(line)}
            assert asked <= owned, f"committed {sorted(asked)} while owning {sorted(owned)}: {line}"
            commits += 1
    assert commits or "assigned" not in log


def test_8_a_key_refused_mid_run_commits_nothing_past_it_and_loses_nothing(kafka_bootstrap, standin, tmp_path):
    s = Scenario("refused", kafka_bootstrap, standin, tmp_path)
    s.events.start(per_second=scale(600, 2000), max_events=scale(6000, 200_000))
    process = s.start("c")
    wait_until(lambda: len(s.standin.events()) >= 300, 60, "deliveries before the key is revoked")
    standin.fail_always(401)
    assert process.wait(30) == 3
    assert "refused the write key" in process.stderr
    produced = s.events.stop()
    s.committed_ok(produced)  # nothing committed past a message UserFlux did not accept
    refused_at = sum(max(0, o) for o in committed(kafka_bootstrap, s.group, s.topic, s.partitions).values())
    standin.heal()  # the key is fixed
    again = s.start("after-fix")
    figures = s.finish(produced, s.duplicate_bound(1))
    assert again.stop() == 0
    s.check_processes(0, 3)
    report("8. key refused (401) mid-run, then fixed", committed_at_refusal=refused_at, **figures)


def test_10_sigterm_during_an_outage_exits_within_its_grace_committing_only_what_was_delivered(
        kafka_bootstrap, standin, tmp_path):
    grace = 3
    s = Scenario("sigterm", kafka_bootstrap, standin, tmp_path, pipeline={"shutdown_grace_s": grace})
    s.events.produce(scale(3000, 100_000))
    process = s.start("c")
    wait_until(lambda: len(s.standin.events()) >= 200, 60, "deliveries before the outage")
    standin.fail_always(503)
    time.sleep(1.0)  # batches are in flight and retrying
    started = time.monotonic()
    assert process.stop(signal.SIGTERM, timeout_s=grace + 15) == 0
    took = time.monotonic() - started
    assert took < grace + 5, f"took {took:.1f}s to stop with a {grace}s grace"
    assert "were not delivered within the 3s grace" in process.stderr
    produced = s.events.produced
    s.committed_ok(produced)
    standin.heal()
    again = s.start("after")
    figures = s.finish(produced, s.duplicate_bound(1))
    assert again.stop() == 0
    s.check_processes(0)
    report("10. SIGTERM during an outage", stop_s=round(took, 1), grace_s=grace, **figures)

