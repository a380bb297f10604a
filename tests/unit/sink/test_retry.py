"""connector/sink/retry.py: Retry-After parsing, backoff with jitter, giving up."""

from __future__ import annotations

import time
from email.utils import formatdate

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connector.sink.retry import MAX_RETRY_AFTER_S, RetryPolicy, parse_retry_after

NOW = 1_700_000_000.0  # a fixed "now" for HTTP dates


def now() -> float:
    return NOW


# -- parse_retry_after -----------------------------------------------------------------


@pytest.mark.parametrize(
    "value, expected",
    [
        ("120", 120.0),
        (" 7 ", 7.0),
        ("0", 0.0),
        ("0.3", 0.3),
        ("-5", 0.0),  # never negative
        ("999999", MAX_RETRY_AFTER_S),  # capped
    ],
)
def test_delta_seconds(value, expected):
    assert parse_retry_after(value, now=now) == pytest.approx(expected)


@pytest.mark.parametrize("value", [None, "", "   ", "soon", "12 seconds", "nan", "Sun, 99 Foo 2023 25:61:00 GMT"])
def test_garbage_is_ignored(value):
    assert parse_retry_after(value, now=now) is None


def test_http_date_in_the_future():
    assert parse_retry_after(formatdate(NOW + 30, usegmt=True), now=now) == pytest.approx(30.0)


def test_http_date_in_the_past_means_now():
    assert parse_retry_after(formatdate(NOW - 3000, usegmt=True), now=now) == 0.0


def test_http_date_far_away_is_capped():
    assert parse_retry_after(formatdate(NOW + 86400 * 30, usegmt=True), now=now) == MAX_RETRY_AFTER_S


def test_obsolete_http_date_formats():
    # RFC 9110 5.6.7: recipients must accept the RFC 850 and asctime forms (both GMT).
    rfc850 = time.strftime("%A, %d-%b-%y %H:%M:%S GMT", time.gmtime(NOW + 40))
    asctime = time.strftime("%a %b %d %H:%M:%S %Y", time.gmtime(NOW + 50))
    assert parse_retry_after(rfc850, now=now) == pytest.approx(40.0)
    assert parse_retry_after(asctime, now=now) == pytest.approx(50.0)


@pytest.fixture
def new_york_time(monkeypatch):
    """Run with a local time zone far from UTC (HTTP dates must not depend on it)."""
    if not hasattr(time, "tzset"):
        pytest.skip("time.tzset is not available on this platform")
    monkeypatch.setenv("TZ", "EST+05")  # POSIX form: no tz database needed
    time.tzset()
    assert time.timezone == 5 * 3600
    yield
    monkeypatch.undo()
    time.tzset()


def test_http_dates_are_gmt_whatever_the_local_time_zone(new_york_time):
    asctime = time.strftime("%a %b %d %H:%M:%S %Y", time.gmtime(NOW + 50))
    assert parse_retry_after(asctime, now=now) == pytest.approx(50.0)
    assert parse_retry_after(formatdate(NOW + 20, usegmt=True), now=now) == pytest.approx(20.0)


def test_default_now_is_wall_clock():
    assert parse_retry_after(formatdate(time.time() + 60, usegmt=True)) == pytest.approx(60.0, abs=2.0)


# -- backoff ---------------------------------------------------------------------------------


def test_backoff_doubles_from_the_initial_value():
    low = RetryPolicy(0.1, 100.0, rng=lambda: 0.0)
    high = RetryPolicy(0.1, 100.0, rng=lambda: 1.0)
    ceilings = [0.1 * 2 ** (n - 1) for n in range(1, 8)]
    assert [low.delay(n) for n in range(1, 8)] == pytest.approx([c / 2 for c in ceilings])
    assert [high.delay(n) for n in range(1, 8)] == pytest.approx(ceilings)


def test_backoff_is_capped_at_max():
    policy = RetryPolicy(0.25, 30.0, rng=lambda: 1.0)
    assert policy.delay(8) == pytest.approx(30.0)  # 0.25 * 128 = 32 > 30
    assert policy.delay(10_000) == pytest.approx(30.0)  # no overflow on a long outage
    assert RetryPolicy(0.25, 30.0, rng=lambda: 0.0).delay(10_000) == pytest.approx(15.0)


def test_backoff_with_real_jitter_varies_within_bounds():
    policy = RetryPolicy(1.0, 60.0)
    delays = [policy.delay(3) for _ in range(200)]
    assert all(2.0 <= d <= 4.0 for d in delays)
    assert len(set(delays)) > 100  # jitter: replicas do not retry in lock-step


@settings(max_examples=100, deadline=None)
@given(
    initial=st.floats(min_value=0.001, max_value=10.0),
    factor=st.floats(min_value=1.0, max_value=1000.0),
    attempts=st.integers(min_value=1, max_value=500),
    r=st.floats(min_value=0.0, max_value=1.0, exclude_max=True),
)
def test_backoff_stays_between_half_and_all_of_the_ceiling(initial, factor, attempts, r):
    maximum = initial * factor
    policy = RetryPolicy(initial, maximum, rng=lambda: r)
    ceiling = min(maximum, initial * 2 ** (attempts - 1))
    delay = policy.delay(attempts)
    assert ceiling / 2 - 1e-9 <= delay <= ceiling + 1e-9
    assert delay <= maximum + 1e-9
    # The ceiling never shrinks as attempts grow.
    assert (
        RetryPolicy(initial, maximum, rng=lambda: 1.0).delay(attempts + 1)
        >= RetryPolicy(initial, maximum, rng=lambda: 1.0).delay(attempts) - 1e-9
    )


# -- Retry-After wins ------------------------------------------------------------------------


def test_retry_after_wins_over_a_shorter_backoff():
    policy = RetryPolicy(0.01, 1.0, rng=lambda: 0.0)
    assert policy.delay(1, retry_after_s=5.0) == pytest.approx(5.0)


def test_retry_after_wins_over_a_longer_backoff():
    policy = RetryPolicy(10.0, 60.0, rng=lambda: 0.0)
    assert policy.delay(5, retry_after_s=2.0) == pytest.approx(2.0)


@settings(max_examples=50, deadline=None)
@given(
    retry_after=st.floats(min_value=0.0, max_value=MAX_RETRY_AFTER_S),
    attempts=st.integers(min_value=1, max_value=50),
    r=st.floats(min_value=0.0, max_value=1.0, exclude_max=True),
)
def test_never_sooner_than_retry_after_and_jitter_is_small(retry_after, attempts, r):
    delay = RetryPolicy(0.001, 0.002, rng=lambda: r).delay(attempts, retry_after_s=retry_after)
    assert retry_after <= delay <= retry_after + 1.0


# -- giving up ---------------------------------------------------------------------------------


def test_max_attempts_zero_retries_forever():
    policy = RetryPolicy(0.1, 1.0)
    assert not any(policy.gives_up(n) for n in (1, 2, 10, 10**6))


def test_max_attempts_gives_up_after_that_many_attempts():
    policy = RetryPolicy(0.1, 1.0, max_attempts=3)
    assert [policy.gives_up(n) for n in (1, 2, 3, 4)] == [False, False, True, True]
