"""The fault suite: the delivery guarantee under crashes, outages, throttling, rebalances
and a refused key, with nothing lost. See tests/support/faults.py for what every scenario
checks at the end; `make soak` runs the same scenarios bigger and longer."""

from __future__ import annotations

import random
import re
import signal
import time

import pytest
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource

from tests.support.connector_process import free_port
from tests.support.faults import SOAK, EventSource, Scenario, elapsed, report, scale
from tests.support.kafka_broker import BrokerError, KafkaBroker, create_topic, ensure_jars
from tests.support.kafka_tools import committed, wait_until

# A soak scenario runs for minutes (the last one took 10.5 minutes in all): bound each at
# 30 minutes instead of pyproject's per-test timeout, which is sized for `make test`.
pytestmark = [pytest.mark.kafka] + ([pytest.mark.timeout(1800)] if SOAK else [])


@pytest.fixture
def scenario(kafka_bootstrap, standin, tmp_path):
    """Makes the test's Scenario (on the session broker unless told another); whatever
    happens, no connector process or producer outlives the test."""
    made: list[Scenario] = []

    def make(name: str, bootstrap: str | None = None, **options) -> Scenario:
        made.append(Scenario(name, bootstrap or kafka_bootstrap, standin, tmp_path, **options))
        return made[-1]

    yield make
    for s in made:
        s.close()


def test_1_kill_9_at_random_moments_loses_nothing(scenario, standin):
    s = scenario("kill9")
    kills = scale(10, 30)
    rng = random.Random()
    # Static membership: a restarted process takes its partitions back at once, instead of
    # waiting out the killed member's session.
    static = {"kafka": {"group.instance.id": f"{s.group}-member"}}
    s.events.start(per_second=scale(600, 2000), max_events=scale(60_000, 2_000_000))
    started = time.monotonic()
    killed_at = []
    for k in range(kills):
        before = s.standin.event_count()
        process = s.start(f"run{k}", **static)
        wait_until(lambda before=before: s.standin.event_count() > before, 60, "deliveries after the restart")
        time.sleep(rng.uniform(0.05, scale(0.8, 3.0)))
        wait_until(lambda: s.standin.in_progress() > 0, 10, "a request in flight")  # mid-batch
        killed_at.append(time.monotonic())
        process.process.kill()
        process.wait(10)
    produced = s.events.stop()
    final = s.start("final", **static)
    figures = s.finish(produced, s.duplicate_bound(kills))
    assert final.stop() == 0
    s.check_processes(0)
    mid_request = s.in_flight_at(killed_at)
    assert mid_request >= 0.8 * kills, f"only {mid_request} of {kills} kills landed with a request in flight"
    report(
        "1. kill -9 mid-batch",
        kills=kills,
        kills_with_requests_in_flight=mid_request,
        seconds=elapsed(started),
        **figures,
    )


def test_2_a_long_outage_pauses_reading_bounds_memory_and_drains_after(scenario, standin):
    s = scenario("outage", latency_s=0.02, userflux={"max_in_flight": 8})
    port = free_port()
    s.events.produce(2000)
    process = s.start("c", metrics={"enabled": True, "port": port})
    wait_until(lambda: s.standin.event_count() >= 500, 60, "deliveries before the outage")
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
    report(
        "2. UserFlux 503 for a long stretch",
        outage_s=outage_s,
        backlog=len(produced.valid),
        outage_requests=outage_requests,
        peak_rss_mb=round(peak_rss),
        **figures,
    )


def test_3_a_429_storm_holds_every_sender_until_the_retry_after(scenario, standin):
    s = scenario("storm", latency_s=0.05, userflux={"max_in_flight": 8})
    s.events.start(per_second=scale(2000, 5000), max_events=scale(20_000, 500_000))
    process = s.start("c")
    wait_until(lambda: s.standin.event_count() >= 500, 60, "deliveries before the storm")
    retry_after, storm_s = 1.0, scale(4, 30)
    standin.fail_for(storm_s, 429, retry_after=int(retry_after))
    time.sleep(storm_s + 1)
    produced = s.events.stop()
    figures = s.finish(produced, duplicates_allowed=0)  # a 429 stores nothing
    assert process.stop() == 0
    s.check_processes(0)
    # Requests already on their way when an answer said wait are fine (they arrive within
    # a moment); none may start after it and before the time the server asked for.
    requests = standin.requests()
    told = [r.answered_at for r in requests if r.status == 429]
    early = [r for r in requests if any(t + 0.25 < r.received_at < t + retry_after for t in told)]
    assert told and not early, f"{len(early)} of {len(requests)} requests went out before the Retry-After"
    report(
        "3. 429 storm with Retry-After: 1", storm_s=storm_s, answered_429=len(told), sent_early=len(early), **figures
    )


def test_4_resets_slow_answers_and_a_server_that_never_answers_lose_nothing(scenario, standin):
    timeout_s, latency_s = 1.0, 0.05
    s = scenario("network", latency_s=latency_s, userflux={"request_timeout_s": timeout_s})
    s.events.start(per_second=scale(800, 2000), max_events=scale(20_000, 500_000))
    process = s.start("c")
    wait_until(lambda: s.standin.event_count() >= 300, 60, "deliveries before the faults")
    stretch = scale(3, 20)
    resets = scale(10, 100)
    standin.reset_next(resets)  # connections reset by the peer
    # Resets in a row make the senders back off together, one probe at a time: about two a second.
    wait_until(lambda: sum(1 for r in standin.requests() if r.status == 0) >= resets, 30 + resets, "the resets")
    standin.set_delay(timeout_s * 1.5)  # answers slower than the request timeout: accepted, late
    time.sleep(stretch)
    standin.set_delay(latency_s)
    standin.hang()  # accepts the connection, reads the request, never answers
    time.sleep(stretch)
    standin.heal()
    standin.set_delay(latency_s)
    produced = s.events.stop()
    late = [r for r in standin.requests() if r.status == 204 and r.answered_at - r.received_at > timeout_s]
    figures = s.finish(produced, duplicates_allowed=50 * len(late))  # a late answer's batch was sent again
    assert process.stop() == 0
    s.check_processes(0)
    report(
        "4. resets, answers slower than the timeout, no answer at all",
        stretch_s=stretch,
        resets=resets,
        late_answers=len(late),
        **figures,
    )


def test_6_three_instances_churning_commit_only_what_they_own(scenario, standin):
    s = scenario("churn", partitions=6)
    s.events.start(per_second=scale(600, 2000), max_events=scale(30_000, 1_000_000))
    started = time.monotonic()
    pause = scale(2.0, 15.0)

    def delivering(process) -> None:
        process.wait_for_log("assigned", timeout_s=60)
        before = s.standin.event_count()
        wait_until(lambda: s.standin.event_count() > before, 60, "deliveries")
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


@pytest.fixture(scope="module")
def fault_broker(tmp_path_factory):
    """A broker of this module's own, which the tests may stop and restart, and which does
    not create topics on first use (so a dead-letter topic can be missing)."""
    broker = KafkaBroker(
        tmp_path_factory.mktemp("fault-broker"), ensure_jars(), overrides={"auto.create.topics.enable": "false"}
    )
    try:
        broker.start()
    except BrokerError as exc:
        pytest.fail(f"could not start the fault suite's Kafka broker:\n{exc}", pytrace=False)
    yield broker
    broker.stop()


def test_5_a_broker_restart_mid_run_is_recovered_from_by_itself(scenario, fault_broker, standin):
    s = scenario("restart", fault_broker.bootstrap_servers)
    s.events.start(per_second=scale(600, 2000), max_events=scale(20_000, 500_000))
    process = s.start("c")
    wait_until(lambda: s.standin.event_count() >= 300, 60, "deliveries before the restart")
    s.events.stop()
    down_s = scale(3, 30)
    fault_broker.stop()  # mid-run: batches in flight, commits on their way
    time.sleep(down_s)
    assert process.running(), "the connector gave up while the broker was down"
    fault_broker.restart()  # same port, same data
    after = EventSource(fault_broker.bootstrap_servers, s.topic, "restart-after", invalid_every=25)
    after.produce(scale(2000, 50_000))  # produced after the restart
    produced = s.events.produced
    produced.valid.update(after.produced.valid)
    produced.invalid |= after.produced.invalid
    figures = s.finish(produced, s.duplicate_bound(1))
    assert process.stop() == 0
    s.check_processes(0)
    report("5. broker stopped and restarted mid-run", down_s=down_s, **figures)


def test_5b_sigterm_while_the_broker_is_down_exits_within_a_bound(scenario, fault_broker, standin):
    grace = 2
    s = scenario("broker-down-stop", fault_broker.bootstrap_servers, pipeline={"shutdown_grace_s": grace})
    s.events.start(per_second=scale(600, 2000), max_events=scale(20_000, 200_000))
    process = s.start("c")
    wait_until(lambda: s.standin.event_count() >= 300, 60, "deliveries before the broker stops")
    produced = s.events.stop()
    fault_broker.stop()
    try:
        time.sleep(1)
        started = time.monotonic()
        # librdkafka waits for the brokers without end when leaving the group; the
        # connector gives it CLOSE_TIMEOUT_S (10 s) after the grace, then exits anyway.
        assert process.stop(signal.SIGTERM, timeout_s=grace + 30) == 0
        took = time.monotonic() - started
    finally:
        fault_broker.restart()
    assert took < grace + 10 + 5, f"took {took:.1f}s to stop"
    again = s.start("after")
    figures = s.finish(produced, s.duplicate_bound(1))
    assert again.stop() == 0
    s.check_processes(0)
    report("5b. SIGTERM while the broker is down", stop_s=round(took, 1), grace_s=grace, **figures)


@pytest.mark.parametrize("why", ["missing", "refused"])
def test_9_a_dead_letter_topic_that_cannot_be_written_loses_nothing(scenario, fault_broker, standin, why):
    bootstrap = fault_broker.bootstrap_servers
    s = scenario(
        f"dlq-{why}",
        bootstrap,
        create_dlq=False,
        # librdkafka waits this long for a topic to appear before failing its messages
        dead_letter={"producer": {"topic.metadata.propagation.max.ms": 1000}},
    )
    if why == "refused":  # too small for even the slimmed dead letter: the broker refuses it
        create_topic(bootstrap, s.dlq, config={"max.message.bytes": "64"})
    s.events.produce(scale(500, 5000))
    process = s.start("c")
    assert process.wait(60) == 5, process.stderr[-3000:]
    assert "could not write to the dead-letter topic" in process.stderr
    produced = s.events.produced
    s.committed_ok(produced, dead_lettered=set())  # not committed past an invalid message
    if why == "missing":
        create_topic(bootstrap, s.dlq)
    else:
        alter_topic(bootstrap, s.dlq, {"max.message.bytes": "1048588"})
    again = s.start("after-fix")
    figures = s.finish(produced, s.duplicate_bound(1))
    assert again.stop() == 0
    s.check_processes(0, 5)
    report(f"9. dead-letter topic {why}", **figures)


def alter_topic(bootstrap: str, topic: str, config: dict[str, str]) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    resource = ConfigResource(
        ConfigResource.Type.TOPIC,
        topic,
        incremental_configs=[ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET) for k, v in config.items()],
    )
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(30)


def test_8_a_key_refused_mid_run_commits_nothing_past_it_and_loses_nothing(scenario, standin):
    s = scenario("refused")
    s.events.start(per_second=scale(600, 2000), max_events=scale(6000, 200_000))
    process = s.start("c")
    wait_until(lambda: s.standin.event_count() >= 300, 60, "deliveries before the key is revoked")
    standin.fail_always(401)
    assert process.wait(30) == 3
    assert "refused the write key" in process.stderr
    produced = s.events.stop()
    s.committed_ok(produced)  # nothing committed past a message UserFlux did not accept
    refused_at = sum(max(0, o) for o in committed(s.bootstrap, s.group, s.topic, s.partitions).values())
    standin.heal()  # the key is fixed
    again = s.start("after-fix")
    figures = s.finish(produced, s.duplicate_bound(1))
    assert again.stop() == 0
    s.check_processes(0, 3)
    report("8. key refused (401) mid-run, then fixed", committed_at_refusal=refused_at, **figures)


def test_10_sigterm_during_an_outage_exits_within_its_grace_committing_only_what_was_delivered(scenario, standin):
    grace = 3
    s = scenario("sigterm", pipeline={"shutdown_grace_s": grace})
    s.events.produce(scale(3000, 100_000))
    process = s.start("c")
    wait_until(lambda: s.standin.event_count() >= 200, 60, "deliveries before the outage")
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
