"""Timestamps in any unit or ISO-8601, always out as integer epoch milliseconds."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connector.mapping.timestamps import iso_ms, to_epoch_ms

MS = 1_700_000_000_123  # 2023-11-14T22:13:20.123Z


@pytest.mark.parametrize(
    "value,expected",
    [
        (1_700_000_000, 1_700_000_000_000),  # seconds
        (1_700_000_000.123, MS),  # fractional seconds
        (MS, MS),  # milliseconds
        (float(MS), MS),
        (1_700_000_000_123_456, MS),  # microseconds
        (1_700_000_000_123_456_789, MS),  # nanoseconds
        (99_999_999_999, 99_999_999_999_000),  # just below 10^11: still seconds
        (100_000_000_000, 100_000_000_000),  # 10^11: milliseconds
    ],
)
def test_numbers_by_magnitude(value, expected):
    result = to_epoch_ms(value)
    assert result == expected
    assert type(result) is int


@pytest.mark.parametrize(
    "value,expected",
    [
        ("1700000000", 1_700_000_000_000),
        ("1700000000123", MS),
        (" 1700000000123 ", MS),
        ("1700000000.123", MS),
        ("1.7e9", 1_700_000_000_000),
        ("1700000000123456", MS),
    ],
)
def test_numeric_strings(value, expected):
    assert to_epoch_ms(value) == expected


@pytest.mark.parametrize(
    "value,expected",
    [
        ("2023-11-14T22:13:20.123Z", MS),
        ("2023-11-14T22:13:20.123z", MS),
        ("2023-11-14T22:13:20.123+00:00", MS),
        ("2023-11-14T23:13:20.123+01:00", MS),
        ("2023-11-14T17:13:20.123-05:00", MS),
        ("2023-11-14T22:13:20.123", MS),  # naive: UTC
        ("2023-11-14 22:13:20.123", MS),
        ("2023-11-14T22:13:20.123456Z", MS),  # microseconds truncated to ms by rounding
        ("2023-11-14T22:13:20Z", 1_700_000_000_000),
        ("2023-11-14", 1_699_920_000_000),
    ],
)
def test_iso_8601(value, expected):
    result = to_epoch_ms(value)
    assert result == expected
    assert type(result) is int


@pytest.mark.parametrize(
    "value,match",
    [
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
        (99_999_999, "before 1973-03-03"),  # seconds: 1973-03-03 is 10^8 s
        ("1970-01-02T00:00:00Z", "'1970-01-02T00:00:00Z' is before 1973-03-03"),
        ("9999-12-31T00:00:00Z", "after the year 5138"),
        ("x" * 10_000, "'xxxxx"),
    ],
)
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


# -- the short path for ISO-8601 (iso_ms) -------------------------------------------------


@pytest.mark.parametrize(
    "text,expected",
    [
        ("2023-11-14T22:13:20.123Z", MS),
        ("2023-11-15T00:13:20.123+02:00", MS),
        ("2023-11-14T17:13:20.123-05:00", MS),
        ("2023-11-14T22:13:20.123456Z", MS),  # microseconds: rounded to the millisecond
        ("2023-11-14T22:13:20Z", MS - 123),
        ("2023-11-14T22:13:20.123", MS),  # no offset: UTC, parsed once, not twice
        ("2023-11-14", 1_699_920_000_000),  # a date alone: its midnight, UTC
    ],
)
def test_iso_ms_reads_iso_8601_times(text, expected):
    assert iso_ms(text) == expected == to_epoch_ms(text)


@pytest.mark.parametrize(
    "text",
    [
        "2023-11-14T22:13:20.123z",  # lower-case z: Python 3.11 does not read it
        " 2023-11-14T22:13:20.123Z",  # white space: to_epoch_ms strips it
        "20231114",  # a number for to_epoch_ms, a date for fromisoformat
        "1700000000123",
        "1960-01-01T00:00:00Z",  # outside the plausible range: to_epoch_ms says why
        "2023-13-14T22:13:20Z",
        "not a time",
    ],
)
def test_iso_ms_leaves_everything_else_to_to_epoch_ms(text):
    assert iso_ms(text) is None


_YEARS = st.integers(1971, 2200)
_OFFSETS = st.sampled_from(["Z", "z", "+00:00", "+02:00", "-05:00", "+05:30", "-23:59", "+14:00", ""])
_FRACTIONS = st.sampled_from(["", ".1", ".12", ".123", ".1234", ".12345", ".123456", ".999999", ".0005"])


@given(
    year=_YEARS,
    month=st.integers(1, 12),
    day=st.integers(1, 28),
    hour=st.integers(0, 23),
    minute=st.integers(0, 59),
    second=st.integers(0, 59),
    fraction=_FRACTIONS,
    offset=_OFFSETS,
    pad=st.sampled_from(["", " ", "\n"]),
    separator=st.sampled_from(["T", " ", "t"]),
)
def test_where_iso_ms_answers_it_agrees_with_to_epoch_ms(
    year, month, day, hour, minute, second, fraction, offset, pad, separator
):
    text = f"{pad}{year:04d}-{month:02d}-{day:02d}{separator}{hour:02d}:{minute:02d}:{second:02d}{fraction}{offset}"
    found = iso_ms(text)
    if found is not None:
        assert found == to_epoch_ms(text)
        assert offset != "z" and not pad  # only times datetime reads as they came
