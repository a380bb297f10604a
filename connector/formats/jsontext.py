"""JSON values: the default format, and the payload of JSON Schema values.

orjson decodes the ordinary value, several times faster than the standard library.
Whatever it refuses, and any value with a run of 19 or more digits (orjson reads an
integer beyond 64 bits as an inexact float, which would corrupt an id), goes through
the exact decoder, which also says precisely why a value is not JSON.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

from ..config.model import LimitsSettings
from ..errors import InvalidMessage
from .limits import nesting_exceeds

_DEFAULT_LIMITS = LimitsSettings()


def decode_value(raw: bytes | str | None, limits: LimitsSettings = _DEFAULT_LIMITS) -> Any:
    """The message value as JSON, within ``limits``; InvalidMessage (deserialize) if not.

    orjson decodes the ordinary value, several times faster than the standard library.
    Whatever it refuses, and any value with a run of 19 or more digits (orjson reads an
    integer beyond 64 bits as an inexact float, which would corrupt an id), goes through
    the exact decoder below, which also says precisely why a value is not JSON.
    """
    if raw is None:
        raise InvalidMessage("the message has no value (a tombstone)", "deserialize")
    if len(raw) > limits.max_message_bytes:
        raise InvalidMessage(
            f"the value is {len(raw)} bytes, over limits.max_message_bytes ({limits.max_message_bytes})", "deserialize"
        )
    if type(raw) is bytes:
        shape = raw.translate(_SHAPE)  # digits become "0", brackets "[", the rest " "
        if _LONG_NUMBER not in shape:
            try:
                value = orjson.loads(raw)
            except orjson.JSONDecodeError:
                pass  # the exact decoder finds the reason
            else:
                if shape.count(b"[") > limits.max_nesting_depth and nesting_exceeds(value, limits.max_nesting_depth):
                    raise _too_deep(limits)
                return value
    return _decode_exact(raw, limits)


def _decode_exact(raw: bytes | str, limits: LimitsSettings) -> Any:
    try:
        if not isinstance(raw, str):
            raw = raw.decode(json.detect_encoding(raw))  # strict: an encoded surrogate is not text
        value = _DECODER.decode(raw)
    except RecursionError:
        # A poison message must not crash the connector into a restart loop.
        raise _too_deep(limits) from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, and integers of over 4300 digits
        raise InvalidMessage(f"the value is not JSON: {_decode_error(exc)}", "deserialize") from None
    # Counting brackets is cheap and settles ordinary events; only the rest is walked.
    if raw.count("{") + raw.count("[") > limits.max_nesting_depth and nesting_exceeds(value, limits.max_nesting_depth):
        raise _too_deep(limits)
    # "\ud800" decodes to a lone surrogate, which is not text: no event could carry it.
    if _SURROGATE_ESCAPE.search(raw) and _holds_lone_surrogate(value):
        raise InvalidMessage(
            "the value is not JSON text: it holds a lone UTF-16 surrogate (\\ud800-\\udfff without its pair)",
            "deserialize",
        )
    return value


def _holds_lone_surrogate(value: Any) -> bool:
    stack = [value]
    while stack:
        node = stack.pop()
        if type(node) is str:
            if _LONE_SURROGATE.search(node):
                return True
        elif type(node) is dict:
            stack.extend(node)
            stack.extend(node.values())
        elif type(node) is list:
            stack.extend(node)
    return False


def _too_deep(limits: LimitsSettings) -> InvalidMessage:
    return InvalidMessage(
        f"the value nests objects and arrays more than limits.max_nesting_depth ({limits.max_nesting_depth}) deep",
        "deserialize",
    )


def _decode_error(exc: ValueError) -> str:
    text = str(exc)
    if "integer string conversion" in text:  # Python refuses to read integers of over 4300 digits
        return "a number has too many digits"
    return text


def _not_json(text: str) -> Any:
    # Python's json accepts NaN and Infinity; JSON does not, and the sink could not encode them.
    raise ValueError(f"{text} is not a JSON value")


def _finite(text: str) -> float:
    number = float(text)
    if number in (_INF, -_INF):  # 1e400: Python reads it as infinity, which JSON cannot carry
        raise ValueError(f"{text[:40]} is too large for a JSON number")
    return number


_INF = float("inf")
_SHAPE = bytes(0x30 if 0x30 <= i <= 0x39 else 0x5B if i in (0x5B, 0x7B) else 0x20 for i in range(256))
_LONG_NUMBER = b"0" * 19
_DECODER = json.JSONDecoder(parse_constant=_not_json, parse_float=_finite)
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_LONE_SURROGATE = re.compile(r"[\ud800-\udfff]")
