"""Fakes for the formats tests: a Kafka message, and a registry client that answers as a
real one would (confluent-kafka's own Schema types and SchemaRegistryError)."""

from __future__ import annotations

from typing import Any

from confluent_kafka.schema_registry import RegisteredSchema, Schema
from confluent_kafka.schema_registry.error import SchemaRegistryError


class FakeMessage:
    def __init__(self, topic: str, value: bytes | None, key: bytes | None = None, offset: int = 0, partition: int = 0):
        self._topic, self._value, self._key, self._offset, self._partition = topic, value, key, offset, partition

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def headers(self) -> list:
        return []

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_764_000_000_000)


class FakeRegistryClient:
    """Schemas by id; ``fail`` (an exception, or a status code) makes every request fail."""

    def __init__(self, schemas: dict[int, Schema] | None = None, versions: dict | None = None):
        self.schemas = dict(schemas or {})
        self.versions = dict(versions or {})  # (subject, version) -> Schema
        self.fail: Any = None
        self.requests: list[tuple] = []

    def _check(self) -> None:
        if isinstance(self.fail, int):
            raise SchemaRegistryError(self.fail, self.fail * 100, f"HTTP {self.fail}")
        if self.fail is not None:
            raise self.fail

    def get_schema(self, schema_id: int) -> Schema:
        self.requests.append(("schema", schema_id))
        self._check()
        if schema_id not in self.schemas:
            raise SchemaRegistryError(404, 40403, f"Schema {schema_id} not found")
        return self.schemas[schema_id]

    def get_version(self, subject: str, version: int) -> RegisteredSchema:
        self.requests.append(("version", subject, version))
        self._check()
        schema = self.versions[(subject, version)]
        return RegisteredSchema(schema_id=0, guid=None, schema=schema, subject=subject, version=version)

    def get_subjects_by_schema_id(self, schema_id: int) -> list[str]:
        self.requests.append(("subjects", schema_id))
        return [f"subject-{schema_id}"]
