"""Turn the timestamps found in messages into UserFlux's epoch milliseconds.

Numbers are read by magnitude, because producers send every unit: below 10^11 they are
seconds (10^11 s is the year 5138), below 10^14 milliseconds, below 10^17 microseconds,
below 10^20 nanoseconds; larger numbers are refused. Numeric strings are read the same way. Other strings must be
ISO-8601; one without a UTC offset is taken as UTC.

The result must lie between 10^11 ms (1973-03-03) and 10^14 ms (the year 5138): a time
outside is a unit mistake or a placeholder, not when an event happened, and UserFlux
would file it decades away from the user's other events.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ..validation import short_repr, type_name

_fromisoformat = datetime.fromisoformat

SECONDS_BELOW = _SECONDS_BELOW = 10**11
MILLIS_BELOW = _MILLIS_BELOW = 10**14
_MICROS_BELOW = 10**17
_NANOS_BELOW = 10**20
EARLIEST_MS = 10**11  # 1973-03-03T09:46:40Z
EARLIEST_S = _EARLIEST_S = EARLIEST_MS // 1000
LATEST_MS = 10**14  # the year 5138


def to_epoch_ms(value: Any) -> int:
    """Return integer epoch milliseconds; raise ValueError saying why not."""
    # The common cases first: epoch milliseconds, or epoch seconds, of this era.
    kind = type(value)
    if kind is int:
        if _SECONDS_BELOW <= value < _MILLIS_BELOW:
            return value
        if _EARLIEST_S <= value < _SECONDS_BELOW:
            return value * 1000
    elif kind is float and _EARLIEST_S <= value < _SECONDS_BELOW:
        return round(value * 1000)
    if isinstance(value, bool):
        raise ValueError(f"expected a number or an ISO-8601 string, found boolean {str(value).lower()}")
    if isinstance(value, (int, float)):
        return in_range(_from_number(value), value)
    if isinstance(value, str):
        text = value.strip()
        if len(text) >= 10 and text[4] == "-" and text[:4].isdigit():  # 2025-11-28...: ISO-8601
            return in_range(_from_iso(text), value)
        try:
            number = float(text) if any(c in text for c in ".eE") else int(text)
        except ValueError:
            return in_range(_from_iso(text), value)
        return in_range(_from_number(number), value)
    raise ValueError(f"expected a number or an ISO-8601 string, found {type_name(value)}")


def iso_ms(text: str) -> int | None:
    """The common ISO-8601 case on its own short path: ``YYYY-...`` as datetime reads it, in
    this era; without an offset it is UTC, as for ``to_epoch_ms``. None for anything else,
    which ``to_epoch_ms`` reads (or refuses, saying why); where this returns a number,
    ``to_epoch_ms`` returns the same one."""
    if text[4:5] != "-":  # "20251128" is a number to to_epoch_ms, a date to datetime
        return None
    try:
        parsed = _fromisoformat(text)
    except ValueError:
        return None
    ms = _epoch_ms(parsed)
    return ms if EARLIEST_MS <= ms <= LATEST_MS else None


def _epoch_ms(parsed: datetime) -> int:
    if parsed.tzinfo is None:  # UTC; timestamp() would take the machine's local time
        parsed = parsed.replace(tzinfo=UTC)
    return round(parsed.timestamp() * 1000)


def in_range(ms: int, found: object) -> int:
    """``ms`` if it can be a real event time, else ValueError naming what was ``found``."""
    if EARLIEST_MS <= ms <= LATEST_MS:
        return ms
    when = "before 1973-03-03" if ms < EARLIEST_MS else "after the year 5138"
    raise ValueError(f"{short_repr(found)} is {when}: not a plausible event time")


def _from_number(number: float) -> int:
    if number != number or number in (float("inf"), float("-inf")):
        raise ValueError(f"{number!r} is not a time")
    if number < 0:
        raise ValueError(f"{short_repr(number)} is before 1970")
    if number >= _NANOS_BELOW:  # also keeps huge integers from overflowing the float division below
        raise ValueError(
            f"{short_repr(number)} is too large for epoch seconds, milliseconds, microseconds or nanoseconds"
        )
    if number < _SECONDS_BELOW:
        return round(number * 1000)
    if number < _MILLIS_BELOW:
        return round(number)
    if number < _MICROS_BELOW:
        return round(number / 1000)
    return round(number / 1_000_000)


def _from_iso(text: str) -> int:
    try:
        # Python 3.11 reads ISO-8601 with a trailing 'Z', not 'z'.
        parsed = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("z") else text)
    except ValueError:
        raise ValueError(f"{short_repr(text)} is neither epoch seconds/milliseconds nor an ISO-8601 time") from None
    ms = _epoch_ms(parsed)
    if ms < 0:
        raise ValueError(f"{short_repr(text)} is before 1970")
    return ms
