"""Protobuf: the writer's schema compiled once per schema id, without generated classes.

The registry serves a Protobuf schema as registered: usually the ``.proto`` text (what
Confluent's registry returns by default), or a base64 ``FileDescriptorProto`` (what
confluent-kafka's serializer registers when it auto-registers, and some registries hand
back verbatim), with its references (imported files) by name. confluent-kafka's
ProtobufDeserializer needs generated classes and asks for ``?format=serialized``, which
not every registry serves (Apicurio 3.3 answers 500, or mangles the bytes), so:

1. ``compile_files`` compiles the text and its references with protoc, the real compiler
   as grpcio-tools ships it, in process (about 1.4 ms a schema, once per id); the
   well-known types come from grpcio-tools' own copies. A base64 descriptor is read as
   it is. protoc reads files, so the texts go to a temporary directory for the call.
2. ``ProtobufSchema`` builds a descriptor pool of those files, finds the message the
   message-index array points at, and parses the payload into a class built at run time.
3. ``to_value`` turns the message into the JSON-like value the mappings read, with a
   converter compiled per message type: the field names as in the schema, 64-bit
   integers as numbers, enums by name, the well-known types as protobuf's JSON mapping
   writes them, fields without presence always there (with their defaults). It is ours
   rather than ``json_format.MessageToDict``, which is 13-14 µs a message and writes
   64-bit integers as strings; the deliberate differences are listed in docs/mapping.md
   and held by the tests, with MessageToDict as the oracle.
"""

from __future__ import annotations

import ast
import base64
import binascii
import pathlib
import re
import tempfile
from collections.abc import Callable
from typing import Any

from ..errors import FatalError
from .registry import BUILTIN_REFERENCES
from .wire import FramingError

MAIN_FILE = "__registry_schema__.proto"  # what the schema itself is called while compiled
_BASE64 = re.compile(r"[A-Za-z0-9+/=\s]+")


class ProtobufSchemaError(ValueError):
    """A schema (or one of its references) could not be compiled or resolved."""


# -- .proto text to descriptors ----------------------------------------------------------


def _well_known_include() -> pathlib.Path:
    import grpc_tools

    return pathlib.Path(grpc_tools.__file__).resolve().parent / "_proto"


def _safe_relative(name: str) -> pathlib.PurePosixPath:
    """An import name as a path that stays inside the temporary directory."""
    path = pathlib.PurePosixPath(name)
    if not name or path.is_absolute() or ".." in path.parts or "\\" in name or "\x00" in name:
        raise ProtobufSchemaError(f"refusing the reference name {name!r}: not a relative .proto path")
    return path


def _descriptor_from_generated(filename: str, source: bytes) -> Any:
    """The FileDescriptorProto in protoc's generated Python for one file (read, not run)."""
    from google.protobuf import descriptor_pb2

    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise ProtobufSchemaError(f"unreadable protoc output for {filename}: {exc}") from None
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "AddSerializedFile"
            and len(node.args) == 1
        ):
            raw = ast.literal_eval(node.args[0])
            if isinstance(raw, bytes):
                return descriptor_pb2.FileDescriptorProto.FromString(raw)
    raise ProtobufSchemaError(f"protoc's output for {filename} holds no serialized descriptor")


def compile_proto(schema: str, references: dict[str, str] | None = None, main_name: str = MAIN_FILE) -> list[Any]:
    """Compile ``schema`` (.proto text) importing ``references`` ({import name: .proto text}):
    the FileDescriptorProto of it and of every file it imports, each after its imports."""
    from grpc_tools import _protoc_compiler

    refs = dict(references or {})
    if main_name in refs:
        raise ProtobufSchemaError(f"a reference may not be called {main_name!r}")
    try:
        workspace = tempfile.TemporaryDirectory(prefix="proto-")
    except OSError as exc:  # the machine's fault, not the schema's: never a dead letter
        raise FatalError(
            f"cannot compile Protobuf schemas: no writable temporary directory ({exc}); "
            "mount one at /tmp (the Helm chart does) or set TMPDIR"
        ) from None
    with workspace as tmp:
        root = pathlib.Path(tmp)
        for name, text in [(main_name, schema), *refs.items()]:
            target = root / _safe_relative(name)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
        include = [str(root).encode(), str(_well_known_include()).encode()]
        try:
            generated = _protoc_compiler.get_protos(main_name.encode(), include)
        except _protoc_compiler.ProtocErrors as exc:
            details = "; ".join(
                f"{_text(e.filename)}:{e.line}:{e.column}: {_text(e.message)}" for e in exc.errors()
            ).replace(MAIN_FILE, "the schema")
            raise ProtobufSchemaError(f"protoc: {details or exc}") from None
    by_name = {}
    for pyname, source in generated:
        fdp = _descriptor_from_generated(_text(pyname), source)
        by_name[fdp.name] = fdp
    if main_name not in by_name:
        raise ProtobufSchemaError(f"protoc produced no descriptor for {main_name}")
    return _dependency_order(by_name, main_name)


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _dependency_order(by_name: dict[str, Any], root: str) -> list[Any]:
    ordered: list[Any] = []
    seen: set[str] = set()
    stack: list[tuple[str, bool]] = [(root, False)]
    while stack:  # iterative post-order: bounded by the number of files
        name, expanded = stack.pop()
        if expanded:
            ordered.append(by_name[name])
            continue
        if name in seen:
            continue
        seen.add(name)
        if name not in by_name:
            raise ProtobufSchemaError(f"{root} imports {name}, which is not among its references")
        stack.append((name, True))
        stack.extend((dep, False) for dep in reversed(by_name[name].dependency) if dep not in seen)
    return ordered


def serialized_descriptor(schema: str) -> Any | None:
    """``schema`` as a base64 FileDescriptorProto, if that is what it is; else None."""
    from google.protobuf import descriptor_pb2
    from google.protobuf.message import DecodeError

    if not schema or _BASE64.fullmatch(schema) is None:
        return None
    try:
        fdp = descriptor_pb2.FileDescriptorProto.FromString(base64.b64decode(schema, validate=False))
    except (binascii.Error, DecodeError, ValueError):
        return None
    return fdp if fdp.message_type or fdp.enum_type or fdp.name else None


def compile_files(text: str, references: tuple[tuple[str, str], ...]) -> list[Any]:
    """The descriptors of a registry schema and its references, each after its imports;
    the schema's own file last."""
    refs = dict(references)
    main = serialized_descriptor(text)
    if main is None:
        return compile_proto(text, refs)
    files: list[Any] = []
    have: set[str] = set()
    for name, ref_text in references:  # a base64 schema's references: descriptors, or texts
        fdp = serialized_descriptor(ref_text)
        if fdp is not None:
            fdp.name = name
            parts = [fdp]
        else:
            parts = compile_proto(ref_text, {k: v for k, v in refs.items() if k != name}, main_name=name)
        for part in parts:
            if part.name not in have:
                files.append(part)
                have.add(part.name)
    files.append(main)
    return files


def _pool(files: list[Any]) -> Any:
    """A descriptor pool of ``files``, with the well-known types a base64 descriptor imports
    without carrying them taken from protobuf's own."""
    from google.protobuf import descriptor_pb2, descriptor_pool

    names = {f.name for f in files}
    extra = []
    for f in files:
        for dep in f.dependency:
            if dep not in names and dep.startswith(BUILTIN_REFERENCES):
                proto = descriptor_pb2.FileDescriptorProto()
                _well_known(dep).CopyToProto(proto)
                extra.append(proto)
                names.add(dep)
    by_name = {f.name: f for f in [*extra, *files]}
    pool = descriptor_pool.DescriptorPool()
    added: set[str] = set()
    for f in [*extra, *files]:
        for fdp in _dependency_order(by_name, f.name):
            if fdp.name not in added:
                pool.Add(fdp)
                added.add(fdp.name)
    return pool


def _well_known(name: str) -> Any:
    import importlib

    from google.protobuf import descriptor_pool

    try:
        return descriptor_pool.Default().FindFileByName(name)
    except KeyError:
        module = name[: -len(".proto")].replace("/", ".") + "_pb2"
        try:
            importlib.import_module(module)
        except ImportError:
            raise ProtobufSchemaError(f"{name} is imported but is not a well-known type protobuf ships") from None
        return descriptor_pool.Default().FindFileByName(name)


# -- a compiled schema ---------------------------------------------------------------------


class ProtobufSchema:
    """One writer schema: its pool, and per message index the class and converter."""

    def __init__(self, schema_id: int, text: str, references: tuple[tuple[str, str], ...]):
        try:
            files = compile_files(text, references)
            self.pool = _pool(files)
            self._main = files[-1]
            self.pool.FindFileByName(self._main.name)
        except ProtobufSchemaError:
            raise
        except (TypeError, KeyError, ValueError) as exc:
            raise ProtobufSchemaError(f"the descriptors do not build: {exc}") from None
        self.schema_id = schema_id
        self._readers: dict[tuple[int, ...], tuple[type, Callable[[Any], dict]]] = {}
        self._converters: dict[str, Callable[[Any], dict]] = {}

    def reader(self, indexes: tuple[int, ...]) -> tuple[type, Callable[[Any], dict]]:
        """(message class, converter) of the message the indexes point at."""
        found = self._readers.get(indexes)
        if found is None:
            from google.protobuf.message_factory import GetMessageClass

            container, names = self._main.message_type, []  # declaration order, as the indexes count
            for index in indexes:
                if index >= len(container):
                    raise FramingError(f"its message index {list(indexes)} points past the schema's messages")
                names.append(container[index].name)
                container = container[index].nested_type
            package = self._main.package
            descriptor = self.pool.FindMessageTypeByName(".".join([package, *names] if package else names))
            found = (GetMessageClass(descriptor), converter(descriptor, self._converters))
            if len(self._readers) < 1024:  # indexes come from messages: keep the table bounded
                self._readers[indexes] = found
        return found


# -- message to value ----------------------------------------------------------------------

Convert = Callable[[Any], Any]


def converter(descriptor: Any, done: dict[str, Convert]) -> Convert:
    """The function that turns a message of ``descriptor`` into a dict (compiled once per type)."""
    name = descriptor.full_name
    if name in done:
        return done[name]
    special = _WELL_KNOWN.get(name)
    if special is not None:
        done[name] = special
        return special
    fields: list[tuple[str, bool, Convert | None]] = []

    def convert(message: Any) -> dict:
        out = {}
        for field_name, presence, c in fields:
            if presence and not message.HasField(field_name):
                continue
            v = getattr(message, field_name)
            out[field_name] = v if c is None else c(v)
        return out

    done[name] = convert  # before the fields: a message may contain itself
    for field in descriptor.fields:
        fields.append((field.name, field.has_presence, _field_converter(field, done)))
    return convert


def _field_converter(field: Any, done: dict[str, Convert]) -> Convert | None:

    message_type = field.message_type
    if message_type is not None and message_type.GetOptions().map_entry:
        key_field, value_field = message_type.fields_by_name["key"], message_type.fields_by_name["value"]
        value = _single(value_field, done)
        key = _map_key(key_field)
        if value is None:
            return lambda m: {key(k): v for k, v in m.items()}
        return lambda m: {key(k): value(v) for k, v in m.items()}
    single = _single(field, done)
    if field.is_repeated:
        return (lambda r: list(r)) if single is None else (lambda r: [single(x) for x in r])
    return single


def _map_key(field: Any) -> Convert:
    from google.protobuf.descriptor import FieldDescriptor as F

    if field.type == F.TYPE_STRING:
        return _same
    if field.type == F.TYPE_BOOL:
        return lambda k: "true" if k else "false"
    return str  # JSON object keys are strings, as protobuf's JSON mapping writes them


def _same(v: Any) -> Any:
    return v


def _single(field: Any, done: dict[str, Convert]) -> Convert | None:
    from google.protobuf.descriptor import FieldDescriptor as F

    kind = field.type
    if kind == F.TYPE_MESSAGE or kind == F.TYPE_GROUP:
        return converter(field.message_type, done)
    if kind == F.TYPE_ENUM:
        names = {v.number: v.name for v in field.enum_type.values}
        return lambda n: names.get(n, n)  # an unknown number stays a number
    if kind == F.TYPE_BYTES:
        return _b64
    if kind == F.TYPE_FLOAT:
        return _shortest_float
    return None  # numbers (64-bit ones too), strings, booleans, doubles: as they are


def _b64(v: bytes) -> str:
    return base64.b64encode(v).decode("ascii")


def _shortest_float(v: float) -> float:
    """A float field holds 32 bits: 0.1 written is 0.10000000149011612 read; the shortest
    decimal that gives the same 32 bits back, as protobuf's JSON mapping prints it."""
    from google.protobuf.internal.type_checkers import ToShortestFloat

    return v if v != v or v in (_INF, -_INF) else ToShortestFloat(v)


_INF = float("inf")


def _json_string(message: Any) -> str:
    return message.ToJsonString()


def _wrapped(message: Any) -> Any:
    return message.value


def _wrapped_float(message: Any) -> Any:
    return _shortest_float(message.value)


def _wrapped_bytes(message: Any) -> str:
    return _b64(message.value)


def _struct_like(message: Any) -> Any:
    from google.protobuf import json_format

    return json_format.MessageToDict(message)


def _any(message: Any) -> Any:
    from google.protobuf import json_format

    try:
        return json_format.MessageToDict(message, preserving_proto_field_name=True)
    except (TypeError, KeyError, ValueError):  # a type the writer's schema does not carry
        return {"@type": message.type_url, "value": _b64(message.value)}


_WELL_KNOWN: dict[str, Convert] = {
    "google.protobuf.Timestamp": _json_string,  # RFC 3339, UTC: "2025-11-24T16:00:00.250Z"
    "google.protobuf.Duration": _json_string,  # "1.5s"
    "google.protobuf.FieldMask": _json_string,  # "a.b,c"
    "google.protobuf.DoubleValue": _wrapped,
    "google.protobuf.FloatValue": _wrapped_float,
    "google.protobuf.Int64Value": _wrapped,
    "google.protobuf.UInt64Value": _wrapped,
    "google.protobuf.Int32Value": _wrapped,
    "google.protobuf.UInt32Value": _wrapped,
    "google.protobuf.BoolValue": _wrapped,
    "google.protobuf.StringValue": _wrapped,
    "google.protobuf.BytesValue": _wrapped_bytes,
    "google.protobuf.Struct": _struct_like,
    "google.protobuf.Value": _struct_like,
    "google.protobuf.ListValue": _struct_like,
    "google.protobuf.Empty": lambda message: {},
    "google.protobuf.Any": _any,
}
