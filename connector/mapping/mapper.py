"""The map stage: a Kafka message in, a UserFlux event out.

Picks the first mapping whose topics match (cached per topic), decodes the JSON value and
applies the mapping. Raises InvalidMessage for messages that can never become an event.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

from ..errors import InvalidMessage
from .event import Mapping


class MessageMapper:
    def __init__(self, mappings: Sequence[Mapping]):
        self.mappings = tuple(mappings)
        self._by_topic: dict[str, Mapping | None] = {}

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
        mapping = self.mapping_for(message.topic())
        if mapping is None:
            # Only possible when librdkafka's regex dialect matched a topic Python's did not.
            raise InvalidMessage(f"no mapping matches topic {message.topic()!r}", "map")
        return mapping, mapping.apply(decode_value(message.value()), message)


def decode_value(raw: bytes | str | None) -> Any:
    if raw is None:
        raise InvalidMessage("the message has no value (a tombstone)", "deserialize")
    try:
        if not isinstance(raw, str):
            raw = raw.decode(json.detect_encoding(raw), "surrogatepass")  # as json.loads does
        return _DECODER.decode(raw)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise InvalidMessage(f"the value is not JSON: {exc}", "deserialize") from None
    except RecursionError:
        # A poison message must not crash the connector into a restart loop.
        raise InvalidMessage("the value is nested too deeply to decode", "deserialize") from None


def _not_json(text: str) -> Any:
    # Python's json accepts NaN and Infinity; JSON does not, and the sink could not encode them.
    raise ValueError(f"{text} is not a JSON value")


_DECODER = json.JSONDecoder(parse_constant=_not_json)
