"""The map stage: a Kafka message in, a UserFlux event out.

Picks the first mapping whose topics match (cached per topic), decodes the JSON value and
applies the mapping. Raises InvalidMessage for messages that can never become an event.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

import orjson

from ..config.model import LimitsSettings
from ..errors import InvalidMessage
from .event import Mapping

_DEFAULT_LIMITS = LimitsSettings()


class MessageMapper:
    def __init__(self, mappings: Sequence[Mapping], limits: LimitsSettings | None = None):
        self.mappings = tuple(mappings)
        self.limits = limits or LimitsSettings()
        self._by_topic: dict[str, Mapping | None] = {}
        # Per topic, what map() calls: the mapping, its filter's test (or None) and its
        # builder, looked up once rather than for every message.
        self._plans: dict[str, tuple[Mapping, Any, Any]] = {}

    def subscription(self) -> list[str]:
        """Topic names and ^regex patterns, in the form librdkafka's subscribe() takes."""
        seen: list[str] = []
        for mapping in self.mappings:
            for entry in mapping.subscription():
                if entry not in seen:
                    seen.append(entry)
        return seen

    def mapping_for(self, topic: str) -> Mapping | None:
        try:
            return self._by_topic[topic]
        except KeyError:
            found = next((m for m in self.mappings if m.matches(topic)), None)
            self._by_topic[topic] = found
            return found

    def map(self, message: Any) -> tuple[Mapping, dict | None]:
        """Return (mapping, event); event is None when the mapping's where: skips it."""
        try:
            mapping, keeps, build = self._plans[message.topic()]
        except KeyError:
            mapping, keeps, build = self._plan(message.topic())
        value = decode_value(message.value(), self.limits)
        if keeps is not None and not keeps(value, message):
            return mapping, None
        return mapping, build(value, message)

    def _plan(self, topic: str) -> tuple[Mapping, Any, Any]:
        mapping = self.mapping_for(topic)
        if mapping is None:
            # Only possible when librdkafka's regex dialect matched a topic Python's did not.
            raise InvalidMessage(f"no mapping matches topic {topic!r}", "map")
        plan = self._plans[topic] = (
            mapping,
            mapping.where.keeps if mapping.where is not None else None,
            mapping.builder.build,
        )
        return plan

    def decode(self, raw: bytes | str | None) -> Any:
        return decode_value(raw, self.limits)


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


def nesting_exceeds(value: Any, limit: int) -> bool:
    """Whether objects and arrays nest more than ``limit`` deep (without recursion)."""
    stack = [(value, 1)] if type(value) in (dict, list) else []
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        children = node.values() if type(node) is dict else node
        stack.extend((child, depth + 1) for child in children if type(child) in (dict, list))
    return False


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
