"""Scratch prototype: decode Confluent-framed Protobuf without generated classes.

It will move into the connector package once the schema-registry feature lands; it
lives here until then so that the integration tests can pin down what works.

The connector cannot ask its users for generated ``_pb2`` modules: it must decode
any Protobuf topic from what the schema registry holds. Python's ``protobuf``
package has no ``.proto`` parser, and a registry's "serialized" form (a base64
``FileDescriptorProto``, ``?format=serialized``) is not served by every registry
(Apicurio 3.3.3 returns the descriptor's raw bytes inside a JSON string, with every
byte above 0x7F replaced by U+FFFD: unreadable). What every Confluent-compatible
registry does serve is the schema as registered, by default the ``.proto`` text,
with its references (other ``.proto`` files, by import name). So:

1. ``compile_proto()`` compiles a ``.proto`` text and the texts it imports with
   protoc, the real compiler, as grpcio-tools ships it (a C++ extension, in process:
   ``grpc_tools._protoc_compiler.get_protos``, which reports errors as exceptions and
   prints nothing). It returns the ``FileDescriptorProto`` of every file involved,
   dependencies first. The well-known types (``google/protobuf/*.proto``) come from
   grpcio-tools' own copies. protoc reads files, so the texts are written to a
   temporary directory for the duration of the call.

   protoc's output is the Python code it would generate, which holds each file's
   serialized descriptor as a bytes literal in ``AddSerializedFile(b'...')``; the
   literal is read with ``ast.literal_eval`` (nothing is executed) and checked to be
   the descriptor of the file it claims to be.

   A schema that is already a base64 ``FileDescriptorProto`` (what confluent-kafka's
   ProtobufSerializer registers when it auto-registers, and what some registries then
   hand back as the schema) is decoded as such, without protoc.

2. ``RegistryProtobufDecoder`` takes a ``SchemaRegistryClient``, reads the Confluent
   framing (magic byte 0, the 4-byte schema id, the message-index array, the payload),
   fetches the writer's schema and its references once per schema id, builds a
   ``DescriptorPool`` from the compiled files, picks the message the indexes point
   at and parses the payload into a dynamic message class
   (``message_factory.GetMessageClass``); ``decode()`` returns it as a dict
   (``json_format.MessageToDict``, the canonical proto3 JSON mapping).
"""

from __future__ import annotations

import ast
import base64
import binascii
import pathlib
import re
import struct
import tempfile
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from google.protobuf.message import DecodeError

MAGIC_BYTE = 0
MAIN_FILE = "__registry_schema__.proto"  # what the schema itself is called while compiled
_BUILTIN_PREFIXES = ("google/protobuf/",)  # served by grpcio-tools' include dir, never from the registry
_BASE64 = re.compile(rb"[A-Za-z0-9+/=\s]+")


class ProtobufSchemaError(ValueError):
    """A schema (or one of its references) could not be compiled or resolved."""


class WireFormatError(ValueError):
    """The bytes are not a Confluent-framed Protobuf message of a known schema."""


# --------------------------------------------------------------------------
# .proto text to descriptors
# --------------------------------------------------------------------------


def _well_known_include() -> pathlib.Path:
    import grpc_tools

    return pathlib.Path(grpc_tools.__file__).resolve().parent / "_proto"


def _safe_relative(name: str) -> pathlib.PurePosixPath:
    """An import name as a path that stays inside the temporary directory."""
    path = pathlib.PurePosixPath(name)
    if not name or path.is_absolute() or ".." in path.parts or "\\" in name or "\x00" in name:
        raise ProtobufSchemaError(f"refusing the reference name {name!r}: not a relative .proto path")
    return path


def _descriptor_from_generated(filename: str, source: bytes) -> descriptor_pb2.FileDescriptorProto:
    """The FileDescriptorProto held in protoc's generated Python for one file."""
    try:
        tree = ast.parse(source)
    except SyntaxError as e:
        raise ProtobufSchemaError(f"unreadable protoc output for {filename}: {e}") from None
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


def compile_proto(
    schema: str, references: Mapping[str, str] | None = None, main_name: str = MAIN_FILE
) -> list[descriptor_pb2.FileDescriptorProto]:
    """Compile ``schema`` (.proto text) importing ``references`` ({import name: .proto text}).

    Returns the descriptors of ``schema`` and of every file it imports (directly or
    not, the well-known types among them), each after the files it depends on; the
    last is ``schema``'s own, named ``main_name``.
    """
    from grpc_tools import _protoc_compiler

    refs = dict(references or {})
    if main_name in refs:
        raise ProtobufSchemaError(f"a reference may not be called {main_name!r}")
    with tempfile.TemporaryDirectory(prefix="proto-") as tmp:
        root = pathlib.Path(tmp)
        for name, text in [(main_name, schema), *refs.items()]:
            target = root / _safe_relative(name)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
        include = [str(root).encode(), str(_well_known_include()).encode()]
        try:
            generated = _protoc_compiler.get_protos(main_name.encode(), include)
        except _protoc_compiler.ProtocErrors as e:
            details = "; ".join(f"{_s(err.filename)}:{err.line}:{err.column}: {_s(err.message)}" for err in e.errors())
            raise ProtobufSchemaError(f"protoc: {details or e}") from None
    by_name: dict[str, descriptor_pb2.FileDescriptorProto] = {}
    for pyname, source in generated:
        fdp = _descriptor_from_generated(_s(pyname), source)
        by_name[fdp.name] = fdp
    if main_name not in by_name:
        raise ProtobufSchemaError(f"protoc produced no descriptor for {main_name}")
    return _dependency_order(by_name, main_name)


def _s(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _dependency_order(
    by_name: Mapping[str, descriptor_pb2.FileDescriptorProto], root: str
) -> list[descriptor_pb2.FileDescriptorProto]:
    ordered: list[descriptor_pb2.FileDescriptorProto] = []
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
            raise ProtobufSchemaError(f"{root} depends on {name}, which protoc did not return")
        stack.append((name, True))
        stack.extend((dep, False) for dep in reversed(by_name[name].dependency) if dep not in seen)
    return ordered


def serialized_descriptor(schema: str) -> descriptor_pb2.FileDescriptorProto | None:
    """``schema`` as a base64 FileDescriptorProto, if that is what it is; else None."""
    raw = schema.encode("ascii", "replace")
    if not raw or _BASE64.fullmatch(raw) is None:
        return None
    try:
        fdp = descriptor_pb2.FileDescriptorProto.FromString(base64.b64decode(raw, validate=False))
    except (binascii.Error, DecodeError, ValueError):
        return None
    return fdp if fdp.message_type or fdp.enum_type or fdp.name else None


# --------------------------------------------------------------------------
# Confluent framing
# --------------------------------------------------------------------------


def _read_zigzag_varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    for _ in range(10):  # a 64-bit varint is at most 10 bytes
        if pos >= len(data):
            raise WireFormatError("truncated message-index varint")
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return (result >> 1) ^ -(result & 1), pos
        shift += 7
    raise WireFormatError("message-index varint longer than 10 bytes")


def parse_framing(data: bytes, max_depth: int = 64) -> tuple[int, list[int], bytes]:
    """(schema id, message indexes, payload) of a Confluent-framed Protobuf message.

    The indexes locate the message in its file: ``[0]`` is the first top-level message
    (written as the single byte 0), ``[1, 2]`` the third message nested in the second.
    """
    if len(data) < 6:
        raise WireFormatError(f"{len(data)} bytes: too short for the Confluent framing")
    if data[0] != MAGIC_BYTE:
        raise WireFormatError(f"magic byte {data[0]}, not 0: not Confluent-framed")
    (schema_id,) = struct.unpack_from(">I", data, 1)
    count, pos = _read_zigzag_varint(data, 5)
    if count == 0:
        return schema_id, [0], data[pos:]
    if count < 0 or count > max_depth:
        raise WireFormatError(f"message-index count {count} out of range")
    indexes = []
    for _ in range(count):
        index, pos = _read_zigzag_varint(data, pos)
        if index < 0:
            raise WireFormatError(f"negative message index {index}")
        indexes.append(index)
    return schema_id, indexes, data[pos:]


# --------------------------------------------------------------------------
# Registry-backed decoder
# --------------------------------------------------------------------------


@dataclass
class CompiledSchema:
    schema_id: int
    pool: descriptor_pool.DescriptorPool
    file_proto: descriptor_pb2.FileDescriptorProto  # the schema's own file, in declaration order
    classes: dict[tuple[int, ...], type] = field(default_factory=dict)

    def message_class(self, indexes: Iterable[int]) -> type:
        """The class of the message the indexes point at (declaration order, nested last)."""
        key = tuple(indexes)
        cls = self.classes.get(key)
        if cls is None:
            container = self.file_proto.message_type
            names = []
            for depth, index in enumerate(key):
                if index >= len(container):
                    raise WireFormatError(
                        f"schema {self.schema_id}: message index {list(key)} out of range at depth {depth}"
                    )
                names.append(container[index].name)
                container = container[index].nested_type
            if not names:
                raise WireFormatError(f"schema {self.schema_id}: empty message index")
            package = self.file_proto.package
            full_name = ".".join([package, *names] if package else names)
            cls = message_factory.GetMessageClass(self.pool.FindMessageTypeByName(full_name))
            self.classes[key] = cls
        return cls


class RegistryProtobufDecoder:
    """Decodes Confluent-framed Protobuf values with schemas from a registry.

    ``client`` is a confluent-kafka ``SchemaRegistryClient`` (only ``get_schema`` and
    ``get_version`` are used). Schemas are fetched and compiled once per id.
    """

    def __init__(self, client, *, max_references: int = 256, to_dict: Callable[[Any], dict] | None = None) -> None:
        self._client = client
        self._max_references = max_references
        self._to_dict = to_dict or (lambda m: json_format.MessageToDict(m, preserving_proto_field_name=True))
        self._compiled: dict[int, CompiledSchema] = {}
        self._lock = threading.Lock()

    def compiled(self, schema_id: int) -> CompiledSchema:
        cached = self._compiled.get(schema_id)
        if cached is not None:
            return cached
        with self._lock:
            cached = self._compiled.get(schema_id)
            if cached is None:
                cached = self._compile(schema_id)
                self._compiled[schema_id] = cached
        return cached

    def _fetch_references(self, schema) -> dict[str, str]:
        """Every reference, transitively: {import name: schema text}."""
        found: dict[str, str] = {}
        pending = list(schema.references or [])
        while pending:
            if len(found) >= self._max_references:
                raise ProtobufSchemaError(f"more than {self._max_references} references")
            ref = pending.pop()
            if ref.name in found or ref.name.startswith(_BUILTIN_PREFIXES):
                continue
            registered = self._client.get_version(ref.subject, ref.version)
            found[ref.name] = registered.schema.schema_str
            pending.extend(registered.schema.references or [])
        return found

    def _compile(self, schema_id: int) -> CompiledSchema:
        schema = self._client.get_schema(schema_id)
        if schema.schema_type != "PROTOBUF":
            raise WireFormatError(f"schema {schema_id} is {schema.schema_type}, not PROTOBUF")
        refs = self._fetch_references(schema)
        main = serialized_descriptor(schema.schema_str)
        if main is None:
            files = compile_proto(schema.schema_str, refs)
        else:  # a base64 descriptor: its references must be descriptors too, or texts that compile alone
            files = []
            have: set[str] = set()
            for name, text in refs.items():
                fdp = serialized_descriptor(text)
                if fdp is not None:
                    fdp.name = name
                    parts = [fdp]
                else:
                    parts = compile_proto(text, {k: v for k, v in refs.items() if k != name}, main_name=name)
                for part in parts:
                    if part.name not in have:
                        files.append(part)
                        have.add(part.name)
            files.append(main)
        pool = descriptor_pool.DescriptorPool()
        added: set[str] = set()
        try:
            for fdp in _pool_order(files):
                if fdp.name not in added:
                    pool.Add(fdp)
                    added.add(fdp.name)
            pool.FindFileByName(files[-1].name)
        except (TypeError, KeyError, ValueError) as e:
            raise ProtobufSchemaError(f"schema {schema_id}: descriptors do not build: {e}") from None
        return CompiledSchema(schema_id, pool, files[-1])

    def message(self, data: bytes):
        """The value as a message of a dynamic class of the writer's schema."""
        schema_id, indexes, payload = parse_framing(data)
        cls = self.compiled(schema_id).message_class(indexes)
        msg = cls()
        try:
            msg.ParseFromString(payload)
        except DecodeError as e:
            raise WireFormatError(f"schema {schema_id}: payload does not parse: {e}") from None
        return msg

    def decode(self, data: bytes) -> dict:
        return self._to_dict(self.message(data))


def _pool_order(files: list[descriptor_pb2.FileDescriptorProto]) -> list[descriptor_pb2.FileDescriptorProto]:
    """Files so that each comes after those it imports that are among them; the well-known
    types a base64 descriptor imports without carrying them are added from protobuf's own."""
    from google.protobuf import descriptor_pool as dp

    names = {f.name for f in files}
    extra: list[descriptor_pb2.FileDescriptorProto] = []
    for f in files:
        for dep in f.dependency:
            if dep not in names and dep.startswith(_BUILTIN_PREFIXES):
                try:
                    fd = dp.Default().FindFileByName(dep)
                except KeyError:
                    _import_well_known(dep)
                    fd = dp.Default().FindFileByName(dep)
                proto = descriptor_pb2.FileDescriptorProto()
                fd.CopyToProto(proto)
                extra.append(proto)
                names.add(dep)
    by_name = {f.name: f for f in [*extra, *files]}
    ordered: list[descriptor_pb2.FileDescriptorProto] = []
    for f in [*extra, *files]:
        ordered.extend(x for x in _dependency_order(by_name, f.name) if x not in ordered)
    return ordered


def _import_well_known(name: str) -> None:
    import importlib

    module = name[: -len(".proto")].replace("/", ".") + "_pb2"
    try:
        importlib.import_module(module)
    except ImportError:
        raise ProtobufSchemaError(f"{name} is imported but not a well-known type protobuf ships") from None
