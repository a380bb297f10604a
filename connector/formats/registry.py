"""Asking the schema registry for a writer schema, and telling its answers apart.

confluent-kafka's ``SchemaRegistryClient`` speaks the Confluent REST API (any
compatible registry: Confluent's, Apicurio's ``/apis/ccompat/v7``, Redpanda's,
Karapace). It is configured here with a request timeout (it has none by default) and
without its own retries (they sleep on the calling thread, the pipeline loop's): the
pipeline retries with backoff itself, between its steps, while it keeps serving
completions, commits and probes.

Every answer is one of: the schema; ``SchemaNotFound`` (404: the id or a reference is not
there: the message is invalid); ``RegistryRefused`` (401/403: the credentials are
wrong, fatal); ``RegistryUnavailable`` (no answer, a timeout, 5xx, 429, anything else:
transient, the message waits). Each request is counted by outcome.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import metrics
from ..config.model import SchemaRegistrySettings
from ..errors import RegistryRefused, RegistryUnavailable

log = logging.getLogger("connector.formats")

MAX_REFERENCES = 256  # schemas one schema may pull in through its references, transitively
# Protobuf's well-known types come with the protobuf package, never from the registry.
BUILTIN_REFERENCES = ("google/protobuf/",)


class SchemaNotFound(LookupError):
    """The registry answered 404 for the schema id (or for one of its references)."""


@dataclass(frozen=True)
class FetchedSchema:
    schema_id: int
    schema_type: str  # AVRO, PROTOBUF or JSON
    text: str
    references: tuple[tuple[str, str], ...]  # (name, schema text), each after those it references
    subject: str | None  # one subject it is registered under, when the registry says


def client_config(settings: SchemaRegistrySettings) -> dict[str, Any]:
    """The SchemaRegistryClient configuration the settings describe."""
    conf: dict[str, Any] = {
        "url": ",".join(settings.urls),
        "timeout": settings.request_timeout_s,
        "max.retries": 0,  # the pipeline retries, without sleeping on its thread
        "cache.capacity": settings.cache_size,
    }
    if settings.username is not None and settings.password is not None:
        conf["basic.auth.user.info"] = f"{settings.username}:{settings.password.reveal()}"
    if settings.bearer_token is not None:
        conf["bearer.auth.credentials.source"] = "STATIC_TOKEN"
        conf["bearer.auth.token"] = settings.bearer_token.reveal()
        conf["bearer.auth.logical.cluster"] = settings.bearer_logical_cluster or ""
    tls = settings.tls
    if tls.ca_file:
        conf["ssl.ca.location"] = tls.ca_file
    if tls.client_cert_file:
        conf["ssl.certificate.location"] = tls.client_cert_file
    if tls.client_key_file:
        conf["ssl.key.location"] = tls.client_key_file
    for key, value in settings.client.items():
        conf[key] = _typed(value)
    return conf


def _typed(value: str) -> Any:
    """The passthrough's values come as strings; the client checks numbers' types."""
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def _http_library() -> Any:
    """The HTTP library the client raises from: httpx2 where installed, else httpx (as
    confluent-kafka picks it)."""
    try:
        from confluent_kafka.schema_registry.common._httpx_compat import httpx as library
    except ImportError:  # an older confluent-kafka: httpx itself
        import httpx as library  # type: ignore[no-redef]
    return library


def make_client(settings: SchemaRegistrySettings) -> Any:
    """A SchemaRegistryClient (no request is made); ValueError/OSError for bad settings."""
    from confluent_kafka.schema_registry import SchemaRegistryClient

    return SchemaRegistryClient(client_config(settings))


class Registry:
    """The writer schemas of one registry, fetched on request (decoders.py caches them)."""

    def __init__(self, settings: SchemaRegistrySettings, client_factory: Callable[[Any], Any] | None = None):
        self.settings = settings
        self.where = settings.urls[0] if len(settings.urls) == 1 else f"{settings.urls[0]} (and the others)"
        self._client = (client_factory or make_client)(settings)

    def fetch(self, schema_id: int) -> FetchedSchema:
        """The schema of ``schema_id`` with its references; SchemaNotFound, RegistryRefused
        or RegistryUnavailable when the registry does not give it."""
        schema = self._ask(lambda: self._client.get_schema(schema_id), f"schema id {schema_id}")
        references = self._references(schema, schema_id)
        return FetchedSchema(
            schema_id=schema_id,
            schema_type=(schema.schema_type or "AVRO").upper(),
            text=schema.schema_str,
            references=references,
            subject=self._subject(schema_id),
        )

    def _references(self, schema: Any, schema_id: int) -> tuple[tuple[str, str], ...]:
        """Every reference, transitively and bounded, each after the ones it references."""
        ordered: list[tuple[str, str]] = []
        seen: set[str] = set()

        def visit(refs: Any, depth: int) -> None:
            for ref in refs or ():
                if ref.name in seen or ref.name.startswith(BUILTIN_REFERENCES):
                    continue
                if len(seen) >= MAX_REFERENCES or depth > MAX_REFERENCES:
                    raise SchemaNotFound(f"schema id {schema_id} has more than {MAX_REFERENCES} references")
                seen.add(ref.name)
                registered = self._ask(
                    functools.partial(self._client.get_version, ref.subject, ref.version),
                    f"the reference {ref.name!r} (subject {ref.subject}, version {ref.version})",
                )
                visit(registered.schema.references, depth + 1)
                ordered.append((ref.name, registered.schema.schema_str))

        visit(schema.references, 0)
        return tuple(ordered)

    def _subject(self, schema_id: int) -> str | None:
        """One subject the id is registered under, for the reasons; best effort."""
        try:
            subjects = self._client.get_subjects_by_schema_id(schema_id)
        except Exception:
            return None
        return subjects[0] if subjects else None

    def _ask(self, call: Callable[[], Any], what: str) -> Any:
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        http = _http_library()
        try:
            answer = call()
        except SchemaRegistryError as exc:
            code = exc.http_status_code
            if code in (401, 403):
                metrics.schema_registry_requests.labels("refused").inc()
                raise RegistryRefused(
                    f"the schema registry at {self.where} refused the credentials asking for {what} "
                    f"(HTTP {code}); check schema_registry.basic_auth or bearer"
                ) from None
            if code == 404:
                metrics.schema_registry_requests.labels("not_found").inc()
                raise SchemaNotFound(f"{what} is not in the schema registry at {self.where}") from None
            metrics.schema_registry_requests.labels("server_error").inc()
            raise RegistryUnavailable(
                f"the schema registry at {self.where} answered HTTP {code} asking for {what}: "
                f"{str(exc.error_message)[:200]}"
            ) from None
        except http.TimeoutException:
            metrics.schema_registry_requests.labels("timeout").inc()
            raise RegistryUnavailable(
                f"the schema registry at {self.where} did not answer within "
                f"{self.settings.request_timeout_s:g}s asking for {what}"
            ) from None
        except (http.HTTPError, OSError) as exc:
            metrics.schema_registry_requests.labels("unreachable").inc()
            raise RegistryUnavailable(
                f"cannot reach the schema registry at {self.where} asking for {what}: {exc or type(exc).__name__}"
            ) from None
        except (ValueError, KeyError, TypeError, AttributeError) as exc:  # an answer that is not the API's
            metrics.schema_registry_requests.labels("server_error").inc()
            raise RegistryUnavailable(
                f"the schema registry at {self.where} gave an unreadable answer asking for {what}: {exc!r}"[:400]
            ) from None
        metrics.schema_registry_requests.labels("ok").inc()
        return answer
