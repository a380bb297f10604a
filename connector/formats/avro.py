"""Avro: the writer's schema compiled once per schema id into a reader of the payload.

fastavro decodes (``schemaless_reader`` with the parsed writer schema: about 5 µs for a
ten-field record, three times less than confluent-kafka's AvroDeserializer, which also
turns timestamps into datetimes). fastavro is given the schema without its logical
types, so that it returns the plain values as written; what needs converting for JSON
(bytes, fixed, decimal, date, time, uuid as fixed) is converted by a function compiled
from the schema here, and a schema with none of them costs nothing more. The conversions
are the table in docs/mapping.md, "Avro, Protobuf and JSON Schema values".
"""

from __future__ import annotations

import base64
import datetime
import json
import uuid
from collections.abc import Callable
from typing import Any

PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}
Convert = Callable[[Any], Any]
_EPOCH_DAY = datetime.date(1970, 1, 1)


class AvroSchemaError(ValueError):
    """The writer's schema is not one fastavro can read."""


def compile_reader(text: str, references: tuple[tuple[str, str], ...]) -> tuple[Any, Convert | None, bool]:
    """(fastavro's parsed schema, the converter or None, whether the schema is recursive)
    for the schema ``text``, whose named-type references come first."""
    import fastavro

    named: dict[str, Any] = {}
    types: dict[str, Any] = {}  # full name -> the original (annotated) definition
    try:
        for _, ref_text in references:
            ref = json.loads(ref_text)
            _collect_names(ref, None, types)
            fastavro.parse_schema(_plain(ref), named)
        schema = json.loads(text)
        _collect_names(schema, None, types)
        parsed = fastavro.parse_schema(_plain(schema), named)
    except Exception as exc:  # json's errors, and fastavro's (SchemaParseException is no ValueError)
        raise AvroSchemaError(f"the Avro schema does not parse: {exc}") from None
    compiler = _Compiler(types)
    convert = compiler.compile(schema, None)
    return parsed, convert, compiler.recursive


def _plain(schema: Any) -> Any:
    """The schema without logicalType annotations: fastavro then returns what was written."""
    if isinstance(schema, list):
        return [_plain(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: v for k, v in schema.items() if k != "logicalType"}
    kind = out.get("type")
    if isinstance(kind, (dict, list)):
        out["type"] = _plain(kind)
    if kind == "record" or kind == "error":
        out["fields"] = [{**f, "type": _plain(f.get("type"))} for f in schema.get("fields", [])]
    elif kind == "array":
        out["items"] = _plain(schema.get("items"))
    elif kind == "map":
        out["values"] = _plain(schema.get("values"))
    return out


def _full_name(name: str, namespace: str | None) -> str:
    return name if "." in name or not namespace else f"{namespace}.{name}"


def _collect_names(schema: Any, namespace: str | None, types: dict[str, Any]) -> None:
    if isinstance(schema, list):
        for s in schema:
            _collect_names(s, namespace, types)
        return
    if not isinstance(schema, dict):
        return
    kind = schema.get("type")
    if kind in ("record", "error", "enum", "fixed") and isinstance(schema.get("name"), str):
        full = _full_name(schema["name"], schema.get("namespace", namespace))
        types[full] = schema
        namespace = full.rsplit(".", 1)[0] if "." in full else None
    if isinstance(kind, (dict, list)):
        _collect_names(kind, namespace, types)
    for f in schema.get("fields", []) if kind in ("record", "error") else []:
        _collect_names(f.get("type"), namespace, types)
    if kind == "array":
        _collect_names(schema.get("items"), namespace, types)
    if kind == "map":
        _collect_names(schema.get("values"), namespace, types)


class _Compiler:
    """The converter of a schema: None where the value fastavro returns is already JSON."""

    def __init__(self, types: dict[str, Any]):
        self.types = types
        self.done: dict[str, Convert | None] = {}
        self.cells: dict[str, list] = {}  # a named record being compiled, for recursion
        self.recursive = False

    def compile(self, schema: Any, namespace: str | None) -> Convert | None:
        if isinstance(schema, str):
            if schema in PRIMITIVES:
                return _b64 if schema == "bytes" else None
            return self._named(_full_name(schema, namespace) if schema not in self.types else schema, namespace)
        if isinstance(schema, list):
            return self._union(schema, namespace)
        if not isinstance(schema, dict):
            return None
        kind, logical = schema.get("type"), schema.get("logicalType")
        if logical is not None:
            found = self._logical(schema, logical)
            if found is not _UNKNOWN:
                return found
        if isinstance(kind, (dict, list)):
            return self.compile(kind, namespace)
        if kind in ("record", "error", "enum", "fixed"):
            full = _full_name(schema["name"], schema.get("namespace", namespace))
            return self._named(full, namespace)
        if kind == "array":
            items = self.compile(schema.get("items"), namespace)
            return None if items is None else (lambda v: [items(x) for x in v])
        if kind == "map":
            values = self.compile(schema.get("values"), namespace)
            return None if values is None else (lambda v: {k: values(x) for k, x in v.items()})
        if isinstance(kind, str):
            return self.compile(kind, namespace)
        return None

    def _named(self, full: str, namespace: str | None) -> Convert | None:
        if full in self.done:
            return self.done[full]
        if full in self.cells:  # recursion: bind late, to what the record turns out to need
            self.recursive = True
            pending = self.cells[full]
            return lambda v: pending[0](v) if pending[0] is not None else v
        schema = self.types.get(full)
        if schema is None:
            return None  # fastavro refused unknown names already
        kind = schema.get("type")
        convert: Any
        if kind == "fixed":
            found = self._logical(schema, schema.get("logicalType")) if schema.get("logicalType") else _UNKNOWN
            convert = _b64 if found is _UNKNOWN else found
        elif kind == "enum":
            convert = None  # fastavro returns the symbol
        else:
            cell: list = [None]
            self.cells[full] = cell
            space = full.rsplit(".", 1)[0] if "." in full else None
            fields = [
                (f["name"], c)
                for f in schema.get("fields", [])
                if (c := self.compile(f.get("type"), space)) is not None
            ]
            del self.cells[full]
            convert = _record(tuple(fields)) if fields else None
            cell[0] = convert
        self.done[full] = convert
        return convert

    def _union(self, branches: list, namespace: str | None) -> Convert | None:
        converts = [(b, self.compile(b, namespace)) for b in branches]
        if all(c is None for _, c in converts):
            return None
        by_type: dict[type, Convert | None] = {}
        ambiguous = False
        for branch, convert in converts:
            kind = self._python_type(branch, namespace)
            if kind in by_type and (convert is not None or by_type[kind] is not None):
                ambiguous = True
            by_type.setdefault(kind, convert)
        if ambiguous:
            # Two branches of one Python type (two records, a record and a map) and one of them
            # needs converting: fastavro does not say which was written; convert what can be told.
            return _generic
        table = {k: c for k, c in by_type.items() if c is not None}
        return lambda v: c(v) if (c := table.get(type(v))) is not None else v

    def _python_type(self, schema: Any, namespace: str | None) -> type:
        if isinstance(schema, dict):
            kind = schema.get("type")
            if kind in ("record", "error", "enum", "fixed"):
                return self._python_type(_full_name(schema["name"], schema.get("namespace", namespace)), namespace)
            container = {"array": list, "map": dict}.get(kind) if isinstance(kind, str) else None
            return container or self._python_type(kind, namespace)
        if isinstance(schema, str):
            primitive = {
                "null": type(None), "boolean": bool, "int": int, "long": int, "float": float,
                "double": float, "bytes": bytes, "string": str,
            }  # fmt: skip
            if schema in primitive:
                return primitive[schema]
            named = self.types.get(schema) or self.types.get(_full_name(schema, namespace))
            if named is not None:
                return {"record": dict, "error": dict, "enum": str, "fixed": bytes}[named["type"]]
        return object

    def _logical(self, schema: dict, logical: Any) -> Any:
        base = schema.get("type")
        if logical == "decimal" and base in ("bytes", "fixed"):
            scale = schema.get("scale", 0)
            return lambda v: _decimal(v, scale)
        if logical == "uuid":
            return _uuid_fixed if base == "fixed" else None
        if logical == "date" and base == "int":
            return _date
        if logical == "time-millis" and base == "int":
            return _time_millis
        if logical == "time-micros" and base == "long":
            return _time_micros
        if logical in _AS_WRITTEN and base == "long":
            return None  # epoch numbers: the mapping's timestamp reads them by magnitude
        return _UNKNOWN  # an unknown logical type: the underlying type, as the spec says


_UNKNOWN = object()
_AS_WRITTEN = {
    "timestamp-millis",
    "timestamp-micros",
    "timestamp-nanos",
    "local-timestamp-millis",
    "local-timestamp-micros",
    "local-timestamp-nanos",
}


def _record(fields: tuple[tuple[str, Convert], ...]) -> Convert:
    def convert(v: dict) -> dict:
        for name, c in fields:
            v[name] = c(v[name])
        return v

    return convert


def _b64(v: Any) -> Any:
    return base64.b64encode(v).decode("ascii") if type(v) is bytes else v


def _generic(v: Any) -> Any:
    """Bytes anywhere become base64; everything else stays (ambiguous unions only)."""
    if type(v) is bytes:
        return base64.b64encode(v).decode("ascii")
    if type(v) is dict:
        return {k: _generic(x) for k, x in v.items()}
    if type(v) is list:
        return [_generic(x) for x in v]
    return v


def _decimal(v: bytes, scale: int) -> str:
    """The exact decimal, as text: every digit written (a JSON number could not keep them)."""
    number = int.from_bytes(v, "big", signed=True)
    if scale <= 0:
        return str(number * 10**-scale)
    digits = str(abs(number)).rjust(scale + 1, "0")
    return ("-" if number < 0 else "") + digits[:-scale] + "." + digits[-scale:]


def _uuid_fixed(v: bytes) -> str:
    return str(uuid.UUID(bytes=v))


def _date(v: int) -> str:
    return (_EPOCH_DAY + datetime.timedelta(days=v)).isoformat()


def _time_millis(v: int) -> str:
    return _clock(v * 1000)


def _time_micros(v: int) -> str:
    return _clock(v)


def _clock(micros: int) -> str:
    if not 0 <= micros < 86_400_000_000:
        raise ValueError(f"a time of day of {micros} µs is outside the day")
    seconds, us = divmod(micros, 1_000_000)
    minutes, s = divmod(seconds, 60)
    h, m = divmod(minutes, 60)
    return f"{h:02d}:{m:02d}:{s:02d}.{us:06d}" if us else f"{h:02d}:{m:02d}:{s:02d}"
