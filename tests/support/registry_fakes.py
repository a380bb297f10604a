"""A schema registry client that answers as a real one would (confluent-kafka's own Schema
types and SchemaRegistryError), for the tests of formats/ and of what decodes through it."""

from __future__ import annotations

from typing import Any

from confluent_kafka.schema_registry import RegisteredSchema, Schema
from confluent_kafka.schema_registry.error import SchemaRegistryError


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
