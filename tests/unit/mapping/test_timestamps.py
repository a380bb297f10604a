"""Timestamps in any unit or ISO-8601, always out as integer epoch milliseconds."""

from __future__ import annotations

import pytest

from connector.mapping.timestamps import to_epoch_ms

MS = 1_700_000_000_123  # 2023-11-14T22:13:20.123Z


@pytest.mark.parametrize("value,expected", [
    (1_700_000_000, 1_700_000_000_000),                 # seconds
    (1_700_000_000.123, MS),                            # fractional seconds
    (MS, MS),                                           # milliseconds
    (float(MS), MS),
    (1_700_000_000_123_456, MS),                        # microseconds
    (1_700_000_000_123_456_789, MS),                    # nanoseconds
    (99_999_999_999, 99_999_999_999_000),               # just below 10^11: still seconds
    (100_000_000_000, 100_000_000_000),                 # 10^11: milliseconds
])
def test_numbers_by_magnitude(value, expected):
    result = to_epoch_ms(value)
    assert result == expected
    assert type(result) is int


@pytest.mark.parametrize("value,expected", [
    ("1700000000", 1_700_000_000_000),
    ("1700000000123", MS),
    (" 1700000000123 ", MS),
    ("1700000000.123", MS),
    ("1.7e9", 1_700_000_000_000),
    ("1700000000123456", MS),
])
def test_numeric_strings(value, expected):
    assert to_epoch_ms(value) == expected


@pytest.mark.parametrize("value,expected", [
    ("2023-11-14T22:13:20.123Z", MS),
    ("2023-11-14T22:13:20.123z", MS),
    ("2023-11-14T22:13:20.123+00:00", MS),
    ("2023-11-14T23:13:20.123+01:00", MS),
    ("2023-11-14T17:13:20.123-05:00", MS),
    ("2023-11-14T22:13:20.123", MS),          # naive: UTC
    ("2023-11-14 22:13:20.123", MS),
    ("2023-11-14T22:13:20.123456Z", MS),      # microseconds truncated to ms by rounding
    ("2023-11-14T22:13:20Z", 1_700_000_000_000),
    ("2023-11-14", 1_699_920_000_000),
])
def test_iso_8601(value, expected):
    result = to_epoch_ms(value)
    assert result == expected
    assert type(result) is int


@pytest.mark.parametrize("value,match", [
    ("garbage", "'garbage' is neither epoch seconds/milliseconds nor an ISO-8601 time"),
    ("2023-13-45T00:00:00Z", "is neither"),
    ("", "is neither"),
    (True, "found boolean"),
    (False, "found boolean"),
    ({"a": 1}, "expected a number or an ISO-8601 string"),
    ([1], "expected a number or an ISO-8601 string"),
    (-1, "before 1970"),
    ("-5", "before 1970"),
    ("1969-12-31T23:59:59Z", "before 1970"),
    (float("nan"), "is not a time"),
    (float("inf"), "is not a time"),
    ("1e999", "is not a time"),
    (10**20, "too large"),
    pytest.param(10**400, "too large", id="10**400-no-OverflowError"),
    (1e300, "too large"),
    (0, "0 is before 1973-03-03: not a plausible event time"),
    (99_999_999, "before 1973-03-03"),                  # seconds: 1973-03-03 is 10^8 s
    ("1970-01-02T00:00:00Z", "'1970-01-02T00:00:00Z' is before 1973-03-03"),
    ("9999-12-31T00:00:00Z", "after the year 5138"),
    ("x" * 10_000, "'xxxxx"),
])
def test_invalid(value, match):
    with pytest.raises(ValueError, match=match):
        to_epoch_ms(value)


def test_the_earliest_and_latest_plausible_times():
    assert to_epoch_ms(100_000_000) == 10**11  # seconds
    assert to_epoch_ms(10**14 - 1) == 10**14 - 1  # milliseconds


def test_a_reason_quotes_a_long_value_shortened():
    with pytest.raises(ValueError) as info:
        to_epoch_ms("x" * 10_000)
    assert len(str(info.value)) < 200
