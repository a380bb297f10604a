"""One decoder per format and field, and the bounded cache of compiled writer schemas.

A decoder takes the raw bytes of a value (or key) and returns the JSON-like value the
mapping reads. For the registry formats it reads the schema id, takes the compiled
schema from the cache, or on the first message of that id fetches it (registry.py) and
compiles it (avro.py, protobuf.py): nothing on the per-message path asks the registry
after that. The cache holds ``schema_registry.cache_size`` schemas by id; past that the
oldest goes (and is fetched again if it comes back). An id the registry does not know is
remembered for ``NOT_FOUND_TTL_S``, so a flood of such messages asks once in a while,
not once each; a schema that does not compile is remembered for good (a schema id's
content never changes).
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable
from typing import Any

from .. import metrics
from ..config.model import LimitsSettings, SchemaRegistrySettings
from ..errors import InvalidMessage
from . import wire
from .avro import AvroSchemaError, compile_reader
from .jsontext import decode_value
from .limits import nesting_exceeds
from .registry import FetchedSchema, Registry, SchemaNotFound

log = logging.getLogger("connector.formats")

NOT_FOUND_TTL_S = 30.0
# The registry's name for each schema type, and ours.
SCHEMA_TYPES = {"AVRO": "avro", "PROTOBUF": "protobuf", "JSON": "json_schema"}
WHAT = {"avro": "Avro", "protobuf": "Protobuf", "json_schema": "JSON Schema"}

Decoder = Callable[[Any], Any]


class _Schema:
    """A compiled writer schema (``read``), or why it cannot be used (``failure``)."""

    __slots__ = ("schema_id", "format", "subject", "read", "failure", "expires")

    def __init__(self, schema_id: int, fmt: str | None, subject: str | None, read: Any = None):
        self.schema_id = schema_id
        self.format = fmt
        self.subject = subject
        self.read = read  # read(raw, what) -> value; InvalidMessage when it does not decode
        self.failure: tuple[str, str] | None = None  # (metric reason, text)
        self.expires: float | None = None

    @property
    def name(self) -> str:
        return f"schema id {self.schema_id}" + (f" (subject {self.subject})" if self.subject else "")


class Decoders:
    """The decoders of every format, sharing one registry and one schema cache."""

    def __init__(
        self,
        registry: Registry | None,
        limits: LimitsSettings,
        cache_size: int = 1000,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.registry = registry
        self.limits = limits
        self.cache_size = cache_size
        self.clock = clock
        self._schemas: dict[int, _Schema] = {}

    @classmethod
    def from_settings(cls, registry: SchemaRegistrySettings | None, limits: LimitsSettings) -> Decoders:
        if registry is None:
            return cls(None, limits)
        return cls(Registry(registry), limits, registry.cache_size)

    @property
    def cached(self) -> int:
        return len(self._schemas)

    # -- the decoders ----------------------------------------------------------------------

    def decoder(self, fmt: str, field: str = "value") -> Decoder:
        """The decoder of ``fmt`` for the message's ``field`` (value or key). A key that is
        null decodes to None (the mapping's @key is then missing); a null value is a
        tombstone, which is invalid."""
        if fmt == "json":
            return self._json(field)
        if fmt not in WHAT:
            raise ValueError(f"unknown format {fmt!r}")
        if self.registry is None:
            raise ValueError(f"the {fmt} format needs schema_registry")
        schemas, load, limit, what = self._schemas, self._load, self.limits.max_message_bytes, f"the {field}"

        def decode(raw: Any) -> Any:
            if raw is None:
                if field == "key":
                    return None
                raise _fail(fmt, "tombstone", "the message has no value (a tombstone)")
            if len(raw) > limit:
                raise _fail(fmt, "too_large", f"{what} is {len(raw)} bytes, over limits.max_message_bytes ({limit})")
            if len(raw) >= 5 and raw[0] == 0:
                schema_id = int.from_bytes(raw[1:5], "big")
            else:
                try:
                    schema_id = wire.schema_id(raw)
                except wire.FramingError as exc:
                    raise _fail(
                        fmt, "not_wire_format", f"{what} is not in Confluent's wire format ({WHAT[fmt]}): {exc}"
                    ) from None
            schema = schemas.get(schema_id)
            if schema is None or schema.expires is not None:
                schema = load(schema_id)
            if schema.format != fmt:
                if schema.failure is not None:
                    raise _fail(fmt, schema.failure[0], f"{what} names {schema.name}: {schema.failure[1]}")
                assert schema.format is not None
                raise _fail(
                    fmt,
                    "wrong_schema_type",
                    f"{what} names {schema.name}, which is {WHAT[schema.format]}, but the mapping reads "
                    f"{fmt}; set the mapping's {field}_format",
                )
            return schema.read(raw, what)

        return decode

    def _json(self, field: str) -> Decoder:
        limits = self.limits
        if field == "value":
            return lambda raw: decode_value(raw, limits)

        def decode_key(raw: Any) -> Any:
            if raw is None:
                return None
            try:
                return decode_value(raw, limits)
            except InvalidMessage as exc:
                raise InvalidMessage(exc.reason.replace("the value", "the key", 1), "deserialize") from None

        return decode_key

    # -- the cache ---------------------------------------------------------------------------

    def _load(self, schema_id: int) -> _Schema:
        """Fetch and compile ``schema_id`` (on the first message that names it). Raises
        RegistryUnavailable or RegistryRefused from the registry; a schema that is not
        there or does not compile comes back as a ``_Schema`` with its failure."""
        cached = self._schemas.get(schema_id)
        if cached is not None and cached.expires is not None and self.clock() < cached.expires:
            return cached
        assert self.registry is not None
        try:
            fetched = self.registry.fetch(schema_id)
        except SchemaNotFound as exc:
            schema = _Schema(schema_id, None, None)
            schema.failure = ("unknown_schema", str(exc))
            schema.expires = self.clock() + NOT_FOUND_TTL_S
            return self._keep(schema)
        return self._keep(self._compile(fetched))

    def _keep(self, schema: _Schema) -> _Schema:
        schemas = self._schemas
        schemas.pop(schema.schema_id, None)
        while len(schemas) >= self.cache_size:
            del schemas[next(iter(schemas))]  # the oldest
        schemas[schema.schema_id] = schema
        metrics.schemas_cached.set(len(schemas))
        return schema

    def _compile(self, fetched: FetchedSchema) -> _Schema:
        fmt = SCHEMA_TYPES.get(fetched.schema_type)
        schema = _Schema(fetched.schema_id, fmt, fetched.subject)
        started = time.perf_counter()
        try:
            if fmt == "avro":
                schema.read = _avro_reader(schema, fetched, self.limits)
            elif fmt == "protobuf":
                schema.read = _protobuf_reader(schema, fetched, self.limits)
            elif fmt == "json_schema":
                schema.read = _json_schema_reader(schema, self.limits)
            else:
                schema.failure = ("bad_schema", f"its type {fetched.schema_type!r} is not one the connector reads")
        except (AvroSchemaError, ValueError) as exc:  # ProtobufSchemaError is a ValueError
            schema.format = None
            schema.failure = ("bad_schema", f"the schema cannot be used: {exc}"[:600])
        if schema.failure is None:
            log.info(
                "compiled %s (%s) in %.1f ms",
                schema.name,
                WHAT[fmt] if fmt else fetched.schema_type,
                (time.perf_counter() - started) * 1000,
            )
        else:
            schema.format = None
            log.warning("%s cannot be used: %s", schema.name, schema.failure[1])
        return schema


def _fail(fmt: str, reason: str, text: str) -> InvalidMessage:
    metrics.decode_failures.labels(fmt, reason).inc()
    return InvalidMessage(text, "deserialize")


def _avro_reader(schema: _Schema, fetched: FetchedSchema, limits: LimitsSettings) -> Any:
    import fastavro

    parsed, convert, recursive = compile_reader(fetched.text, fetched.references)
    read_record, BytesIO, depth = fastavro.schemaless_reader, io.BytesIO, limits.max_nesting_depth

    def read(raw: bytes, what: str) -> Any:
        stream = BytesIO(raw)
        stream.seek(5)
        try:
            value = read_record(stream, parsed, None)
            if convert is not None:
                value = convert(value)
        except Exception as exc:
            raise _fail("avro", "undecodable", f"{what} does not decode with {schema.name}: {_why(exc)}") from None
        if stream.tell() != len(raw):
            raise _fail(
                "avro",
                "undecodable",
                f"{what} does not decode with {schema.name}: "
                f"{len(raw) - stream.tell()} bytes are left after the record",
            )
        if recursive and nesting_exceeds(value, depth):
            raise _fail("avro", "too_large", f"{what} nests more than limits.max_nesting_depth ({depth}) deep")
        return value

    return read


def _protobuf_reader(schema: _Schema, fetched: FetchedSchema, limits: LimitsSettings) -> Any:
    from google.protobuf.message import DecodeError

    from .protobuf import ProtobufSchema

    compiled = ProtobufSchema(fetched.schema_id, fetched.text, fetched.references)
    reader = compiled.reader

    def read(raw: bytes, what: str) -> Any:
        try:
            indexes, start = wire.message_indexes(raw)
            cls, convert = reader(indexes)
        except wire.FramingError as exc:
            raise _fail("protobuf", "undecodable", f"{what} does not decode with {schema.name}: {exc}") from None
        except KeyError as exc:
            raise _fail("protobuf", "undecodable", f"{what} does not decode with {schema.name}: {exc}") from None
        message = cls()
        try:
            message.ParseFromString(raw[start:])
            return convert(message)
        except (DecodeError, RecursionError, ValueError) as exc:
            raise _fail("protobuf", "undecodable", f"{what} does not decode with {schema.name}: {_why(exc)}") from None

    return read


def _json_schema_reader(schema: _Schema, limits: LimitsSettings) -> Any:
    def read(raw: bytes, what: str) -> Any:
        try:
            return decode_value(raw[5:], limits)
        except InvalidMessage as exc:
            metrics.decode_failures.labels("json_schema", "undecodable").inc()
            reason = exc.reason.replace("the value", what, 1)
            raise InvalidMessage(f"{reason} (the payload of {schema.name})", "deserialize") from None

    return read


def _why(exc: BaseException) -> str:
    text = str(exc)
    if isinstance(exc, EOFError) or not text:
        return f"{type(exc).__name__}: the payload ends too soon" if not text else f"{type(exc).__name__}: {text}"
    return f"{type(exc).__name__}: {text}"[:300]
