"""The deserialize stage for the registry formats: Avro, Protobuf and JSON Schema values
(and keys) in Confluent's wire format, decoded with the writer's schema from a schema
registry into the JSON-like values the mappings read.

``Decoders`` (decoders.py) hands the mapper one decoder per format and field, compiled
at start; a decoder reads the schema id of each message (wire.py), takes the compiled
schema from a bounded cache, or fetches it once (registry.py) and compiles it (avro.py,
protobuf.py; JSON Schema payloads are JSON). What a decoded value looks like is written
down in docs/mapping.md, "Avro, Protobuf and JSON Schema values", and tested.

What can go wrong is told apart, because the guarantee depends on it: a message that is
not in the wire format, names an unknown schema id, or does not decode is invalid
(``InvalidMessage``, stage ``deserialize``: ``on_invalid`` decides); a registry that
does not answer is ``RegistryUnavailable``: nothing is wrong with the message, which
waits until the registry answers; a registry that refuses the credentials is
``RegistryRefused``, fatal (exit 3).
"""

from __future__ import annotations

from .decoders import Decoders
from .limits import nesting_exceeds

__all__ = ["Decoders", "nesting_exceeds"]
