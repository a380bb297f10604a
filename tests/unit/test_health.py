"""connector/health.py: what /healthz and /readyz say, told apart by a fake clock."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from connector.health import ADDRESS_REFUSED, KEY_REFUSED, READY, SHUTTING_DOWN, HealthServer, Status
from tests.support.fakes import FakeClock


@pytest.fixture
def clock():
    return FakeClock(1000.0)


@pytest.fixture
def status(clock):
    return Status(loop_timeout_s=60, stall_timeout_s=300, clock=clock)


def test_healthy_while_the_loop_turns_and_nothing_is_pending(status, clock):
    clock.now += 3600
    status.beat()
    assert status.live() == (
        True,
        {"status": "ok", "pending": 0, "oldest_pending_s": 0.0, "last_progress_s": 3600.0, "loop_idle_s": 0.0},
    )


def test_a_loop_that_stopped_turning_fails(status, clock):
    clock.now += 61
    ok, body = status.live()
    assert (ok, body["status"], body["loop_idle_s"]) == (False, "loop_stopped", 61.0)


def test_pending_with_no_progress_for_the_stall_timeout_is_a_stall(status, clock):
    status.set_pending(5, oldest_read_at=clock.now)
    clock.now += 299
    status.beat()
    assert status.live()[0] is True
    clock.now += 1
    status.beat()
    ok, body = status.live()
    assert (ok, body["status"], body["pending"], body["oldest_pending_s"]) == (False, "stalled", 5, 300.0)


def test_a_new_message_after_a_long_idle_time_is_not_a_stall(status, clock):
    clock.now += 3600  # nothing to do for an hour: no progress, but nothing pending either
    status.set_pending(1, oldest_read_at=clock.now)
    status.beat()
    assert status.live()[1]["status"] == "ok"


def test_progress_resets_the_stall(status, clock):
    status.set_pending(5, oldest_read_at=clock.now)
    clock.now += 400
    status.progress()
    status.beat()
    assert status.live()[0] is True


def test_an_outage_userflux_answers_is_not_a_stall(status, clock):
    status.set_pending(5, oldest_read_at=clock.now)
    clock.now += 400
    status.error_answered(wait_s=2)
    status.beat()
    assert status.live()[:1] == (True,) and status.live()[1]["status"] == "outage"
    # Answers stop for longer than the stall timeout (timeouts are no answer): a stall.
    clock.now += 301
    status.beat()
    assert status.live()[1]["status"] == "stalled"


def test_waiting_out_a_long_retry_after_is_an_outage(status, clock):
    status.set_pending(5, oldest_read_at=clock.now)
    status.error_answered(wait_s=900)
    clock.now += 600
    status.beat()
    assert status.live()[1]["status"] == "outage"


def test_errors_answered_before_the_last_progress_are_over(status, clock):
    status.error_answered(wait_s=1)
    clock.now += 2
    status.progress()
    assert status.live()[1]["status"] == "ok"


def test_readiness_follows_the_assignment_shutdown_and_refusal(status):
    assert status.ready() == (False, {"status": "starting", "detail": "waiting for the first partition assignment"})
    status.assigned = 3
    status.set_state(READY)
    assert status.ready() == (True, {"status": "ready", "assigned_partitions": 3})
    status.set_state(KEY_REFUSED, "UserFlux refused the write key: HTTP 401")
    status.set_state(SHUTTING_DOWN, "delivering what is in flight")  # the refusal stays the answer
    assert status.ready() == (False, {"status": "key_refused", "detail": "UserFlux refused the write key: HTTP 401"})


def test_a_refused_address_is_final_too(status):
    status.set_state(ADDRESS_REFUSED, "HTTP 404")
    status.set_state(READY)
    assert status.ready()[1]["status"] == "address_refused"


def get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


def test_the_server_answers_json_for_probes_and_text_for_metrics(status, clock):
    server = HealthServer("127.0.0.1", 0, status).start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        code, kind, body = get(base + "/readyz")
        assert (code, kind, json.loads(body)["status"]) == (503, "application/json", "starting")
        clock.now += 61
        code, kind, body = get(base + "/healthz")
        assert (code, json.loads(body)["status"]) == (503, "loop_stopped")
        code, kind, body = get(base + "/metrics")
        assert code == 200 and kind.startswith("text/plain") and "userflux_connector_build_info" in body
        assert get(base + "/nothing")[0] == 404
    finally:
        server.stop()
