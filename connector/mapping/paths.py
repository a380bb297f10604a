"""Compile the references a mapping reads values through.

A reference is either a dotted path into the message's JSON value (``user.id``,
``items.0.sku``, ``.`` for the whole value, ``a\\.b`` for a key containing a dot) or a
piece of Kafka metadata (``@key``, ``@key.<path>`` into a decoded key, ``@topic``, ``@partition``, ``@offset``,
``@timestamp``, ``@headers.<name>``).

Each reference is compiled once into a getter ``get(value, message)`` that returns the
value found or ``MISSING``; nothing is parsed per message.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..validation import type_name

# A value that is not there. Its type is named "nothing": that is how type_name() shows it.
MISSING: Any = type("nothing", (), {"__repr__": lambda self: "MISSING", "__bool__": lambda self: False})()

Getter = Callable[[Any, Any], Any]

METADATA = ("@key", "@key.<path>", "@topic", "@partition", "@offset", "@timestamp", "@headers.<name>")


def split_path(text: str) -> list[str]:
    r"""Split ``a.b\.c`` into ``["a", "b.c"]``; raise ValueError on empty segments."""
    segments: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text) and text[i + 1] == ".":
            current.append(".")
            i += 2
            continue
        if ch == ".":
            segments.append("".join(current))
            current = []
        else:
            current.append(ch)
        i += 1
    segments.append("".join(current))
    if any(s == "" for s in segments):
        raise ValueError("a path has no empty segments (write 'a.b', not 'a..b', '.a' or 'a.')")
    return segments


def compile_ref(text: str) -> Getter:
    """Compile a reference; raise ValueError with a user-facing reason if malformed."""
    if not isinstance(text, str):
        raise ValueError(f"a path must be a string, found {type_name(text)}")
    if text == "":
        raise ValueError("a path cannot be empty (use '.' for the whole value)")
    if text == ".":
        return _whole_value
    if text.startswith("@"):
        return _compile_metadata(text)
    return _compile_json_path(tuple(split_path(text)))


def _whole_value(value: Any, message: Any) -> Any:
    return value


def _step(node: Any, segment: str) -> Any:
    if type(node) is dict:
        return node.get(segment, MISSING)
    if type(node) is list and segment.isdigit():
        index = int(segment)
        return node[index] if index < len(node) else MISSING
    return MISSING


def _compile_json_path(segments: tuple[str, ...]) -> Getter:
    # Specialised closures for the common short paths: this runs for every field of
    # every message.
    if len(segments) == 1:
        (key,) = segments

        def get1(value: Any, message: Any) -> Any:
            if type(value) is dict:
                return value.get(key, MISSING)
            return _step(value, key)

        get1.segments = segments  # type: ignore[attr-defined]  # generated.py reads these inline
        return get1
    if len(segments) == 2:
        first, second = segments

        def get2(value: Any, message: Any) -> Any:
            node = value.get(first, MISSING) if type(value) is dict else _step(value, first)
            if type(node) is dict:
                return node.get(second, MISSING)
            return _step(node, second) if node is not MISSING else MISSING

        get2.segments = segments  # type: ignore[attr-defined]
        return get2

    def getn(value: Any, message: Any) -> Any:
        node = value
        for segment in segments:
            node = _step(node, segment)
            if node is MISSING:
                return MISSING
        return node

    return getn


def _decode(raw: Any) -> Any:
    if raw is None:
        return MISSING
    if isinstance(raw, str):
        return raw
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        # A binary key or header cannot be an id or a name: treat it as absent so a
        # fallback can apply, and the reason names the reference.
        return MISSING


def _key(value: Any, message: Any) -> Any:
    raw = message.key()
    if type(raw) is bytes or type(raw) is str:
        return _decode(raw)
    return MISSING if raw is None else raw  # decoded in its key_format (mapper.KeyedMessage)


def _topic(value: Any, message: Any) -> Any:
    return message.topic()


def _partition(value: Any, message: Any) -> Any:
    return message.partition()


def _offset(value: Any, message: Any) -> Any:
    return message.offset()


def _timestamp(value: Any, message: Any) -> Any:
    kind, ts = message.timestamp()
    # kind 0 is TIMESTAMP_NOT_AVAILABLE in librdkafka
    return ts if kind != 0 and ts is not None and ts >= 0 else MISSING


_METADATA_GETTERS: dict[str, Getter] = {
    "@key": _key,
    "@topic": _topic,
    "@partition": _partition,
    "@offset": _offset,
    "@timestamp": _timestamp,
}


def _compile_metadata(text: str) -> Getter:
    if text in _METADATA_GETTERS:
        return _METADATA_GETTERS[text]
    if text.startswith("@key."):
        # A field of a key decoded from JSON, Avro, Protobuf or JSON Schema (key_format).
        inner = _compile_json_path(tuple(split_path(text[len("@key.") :])))
        return lambda value, message: inner(_key(value, message), message)
    if text.startswith("@headers."):
        name = text[len("@headers.") :]
        if not name:
            raise ValueError("'@headers.' needs a header name, e.g. '@headers.device-id'")

        def header(value: Any, message: Any) -> Any:
            found = MISSING
            for key, raw in message.headers() or ():
                if key == name:
                    found = raw  # the last header of that name wins, like Kafka Streams
            return MISSING if found is MISSING else _decode(found)

        return header
    raise ValueError(f"unknown message metadata {text!r}; known: {', '.join(METADATA)}")
