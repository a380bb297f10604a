"""The map stage: a Kafka message in, a UserFlux event out.

Picks the first mapping whose topics match (cached per topic), decodes the value (and the
key, when the mapping's key_format is not string) in the mapping's format (formats/) and
applies the mapping. Raises InvalidMessage for messages that can never become an event,
and lets formats' RegistryUnavailable through: the message is fine, the registry is not.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..config.model import LimitsSettings
from ..errors import InvalidMessage
from ..formats import Decoders
from ..formats.jsontext import decode_value
from ..formats.limits import nesting_exceeds
from .event import Mapping

__all__ = ["MessageMapper", "decode_value", "nesting_exceeds"]


class MessageMapper:
    """``decoders`` decode each mapping's format; without them (the ``map`` command) the
    values given are the decoded form: JSON, and keys too unless read as strings."""

    def __init__(
        self, mappings: Sequence[Mapping], limits: LimitsSettings | None = None, decoders: Decoders | None = None
    ):
        self.mappings = tuple(mappings)
        self.limits = limits or LimitsSettings()
        self.decoded_input = decoders is None
        self.decoders = decoders or Decoders(None, self.limits)
        self._by_topic: dict[str, Mapping | None] = {}
        # Per topic, what map() calls: the mapping, its filter's test (or None), its
        # builder, and the value's and the key's decoders (None: JSON; the key as it is),
        # looked up once rather than for every message.
        self._plans: dict[str, tuple[Mapping, Any, Any, Any, Any]] = {}

    def subscription(self) -> list[str]:
        """Topic names and ^regex patterns, in the form librdkafka's subscribe() takes."""
        seen: list[str] = []
        for mapping in self.mappings:
            for entry in mapping.subscription():
                if entry not in seen:
                    seen.append(entry)
        return seen

    def topic_names(self) -> list[str]:
        """The topics mappings name (``topics:``); topics a ``pattern:`` matches are known
        only once assigned."""
        return sorted({topic for mapping in self.mappings if mapping.topics is not None for topic in mapping.topics})

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
            mapping, keeps, build, decode, decode_key = self._plans[message.topic()]
        except KeyError:
            mapping, keeps, build, decode, decode_key = self._plan(message.topic())
        value = decode_value(message.value(), self.limits) if decode is None else decode(message.value())
        if decode_key is not None:
            message = KeyedMessage(message, decode_key(message.key()))
        if keeps is not None and not keeps(value, message):
            return mapping, None
        return mapping, build(value, message)

    def _plan(self, topic: str) -> tuple[Mapping, Any, Any, Any, Any]:
        mapping = self.mapping_for(topic)
        if mapping is None:
            # Only possible when librdkafka's regex dialect matched a topic Python's did not.
            raise InvalidMessage(f"no mapping matches topic {topic!r}", "map")
        plan = self._plans[topic] = (
            mapping,
            mapping.where.keeps if mapping.where is not None else None,
            mapping.builder.build,
            *self._decoders(mapping),
        )
        return plan

    def _decoders(self, mapping: Mapping) -> tuple[Any, Any]:
        value_format, key_format = mapping.value_format, mapping.key_format
        if self.decoded_input:
            value_format, key_format = "json", "string" if key_format == "string" else "json"
        return (
            None if value_format == "json" else self.decoders.decoder(value_format, "value"),
            None if key_format == "string" else self.decoders.decoder(key_format, "key"),
        )

    def decode(self, raw: bytes | str | None) -> Any:
        return decode_value(raw, self.limits)


class KeyedMessage:
    """A message whose key() is the decoded key, for the mapping's @key; the rest is the
    message's. Only the mapping sees it: the pipeline keeps the message as read."""

    __slots__ = ("_message", "_key")

    def __init__(self, message: Any, key: Any):
        self._message = message
        self._key = key

    def key(self) -> Any:
        return self._key

    def value(self) -> Any:
        return self._message.value()

    def topic(self) -> str:
        return self._message.topic()

    def partition(self) -> int:
        return self._message.partition()

    def offset(self) -> int:
        return self._message.offset()

    def timestamp(self) -> tuple[int, int]:
        return self._message.timestamp()

    def headers(self) -> Any:
        return self._message.headers()
