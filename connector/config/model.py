"""The typed settings the connector runs with, built once by ``load.py``; each default
is written here, once."""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_BASE_URL = "https://integration-api.userflux.co"
ON_INVALID = ("dead_letter", "skip", "stop")
# What a message's value (and key) is written in. The registry formats are in Confluent's
# wire format: a zero byte, a 4-byte schema id, then the payload (Protobuf adds indexes).
REGISTRY_FORMATS = ("avro", "protobuf", "json_schema")
VALUE_FORMATS = ("json", *REGISTRY_FORMATS)
KEY_FORMATS = ("string", "json", *REGISTRY_FORMATS)
DEFAULT_VALUE_FORMAT = "json"
DEFAULT_KEY_FORMAT = "string"
# The destination of the top-level userflux.api_key: what a mapping without one uses.
DEFAULT_DESTINATION = "default"


class Secret:
    """A string that does not print itself: repr/str show ``***``."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class RetrySettings:
    initial_backoff_ms: int = 250
    max_backoff_ms: int = 30_000
    max_attempts: int = 0  # 0: retry transient failures forever


@dataclass(frozen=True)
class TlsSettings:
    ca_file: str | None = None  # verify UserFlux against this PEM bundle instead of the default one
    client_cert_file: str | None = None  # a client certificate (PEM), for mutual TLS
    client_key_file: str | None = None  # its private key, unless the certificate file holds it


@dataclass(frozen=True)
class DestinationSettings:
    """One UserFlux project events are delivered to (``userflux.destinations``, or the
    top-level key's): its write key, where its API is, and how fast it may be sent to."""

    name: str
    api_key: Secret
    base_url: str = DEFAULT_BASE_URL
    tls: TlsSettings = field(default_factory=TlsSettings)
    max_events_per_second: float | None = None  # None: no cap
    max_requests_per_second: float | None = None

    def key(self, setting: str) -> str:
        """Where one of this destination's settings is written, for errors: ``userflux.api_key``
        or ``userflux.destinations.<name>.api_key``."""
        return destination_key(self.name, setting)


def destination_key(name: str, setting: str) -> str:
    return f"userflux.{setting}" if name == DEFAULT_DESTINATION else f"userflux.destinations.{name}.{setting}"


@dataclass(frozen=True)
class UserFluxSettings:
    api_key: Secret  # empty when every mapping names a declared destination
    base_url: str = DEFAULT_BASE_URL
    location_enrichment: bool = False
    batch_size: int = 50
    linger_ms: int = 200
    max_in_flight: int = 8
    request_timeout_s: float = 10.0
    retry: RetrySettings = field(default_factory=RetrySettings)
    tls: TlsSettings = field(default_factory=TlsSettings)
    allow_insecure_http: bool = False  # plain http to a host other than this machine
    max_events_per_second: float | None = None  # the top-level key's destination; None: no cap
    max_requests_per_second: float | None = None
    destinations: tuple[DestinationSettings, ...] = ()  # declared under userflux.destinations

    @property
    def default_destination(self) -> DestinationSettings | None:
        """The top-level key's destination; None when there is no top-level key."""
        if not self.api_key.reveal():
            return None
        return DestinationSettings(
            DEFAULT_DESTINATION,
            self.api_key,
            self.base_url,
            self.tls,
            self.max_events_per_second,
            self.max_requests_per_second,
        )

    @property
    def all_destinations(self) -> tuple[DestinationSettings, ...]:
        """Every destination: the top-level key's (if any), then the declared ones."""
        default = self.default_destination
        return ((default,) if default is not None else ()) + self.destinations


@dataclass(frozen=True)
class DeadLetterSettings:
    topic: str
    producer: dict[str, str] = field(default_factory=dict, repr=False)  # may hold passwords


@dataclass(frozen=True)
class MetricsSettings:
    enabled: bool = True
    host: str = "0.0.0.0"  # noqa: S104 - the pod's probes and scrapes come from outside it
    port: int = 9464
    lag_interval_s: float = 10.0  # how often consumer lag is asked of the brokers


@dataclass(frozen=True)
class PipelineSettings:
    max_pending_messages: int = 10_000
    commit_interval_ms: int = 1_000
    rebalance_timeout_s: float = 10.0
    shutdown_grace_s: float = 30.0
    stall_timeout_s: float = 300.0  # /healthz fails after this long pending with no progress
    refused_exit_delay_s: float = 30.0  # key refused: stay up (not ready) this long before exit 3


@dataclass(frozen=True)
class LimitsSettings:
    """What one message may cost before the mapping refuses it (it is then invalid)."""

    max_message_bytes: int = 1_048_576  # the value's size; Kafka's own default limit is about this
    max_nesting_depth: int = 64  # objects and arrays inside each other


@dataclass(frozen=True)
class SchemaRegistrySettings:
    """Where schemas come from for the registry formats (formats/ asks, once per id)."""

    urls: tuple[str, ...]
    username: str | None = None  # basic auth
    password: Secret | None = None
    bearer_token: Secret | None = None
    bearer_logical_cluster: str | None = None  # Confluent Cloud's target-sr-cluster header
    tls: TlsSettings = field(default_factory=TlsSettings)
    request_timeout_s: float = 5.0  # one request; confluent-kafka's client has none by default
    cache_size: int = 1000  # schemas kept, by id
    initial_backoff_ms: int = 500  # the registry unavailable: retry after this, doubling
    max_backoff_ms: int = 30_000
    client: dict[str, str] = field(default_factory=dict, repr=False)  # SchemaRegistryClient passthrough


@dataclass(frozen=True)
class Settings:
    source: str
    kafka: dict[str, str] = field(repr=False)  # may hold passwords
    userflux: UserFluxSettings
    on_invalid: str
    dead_letter: DeadLetterSettings | None
    metrics: MetricsSettings
    pipeline: PipelineSettings
    limits: LimitsSettings = field(default_factory=LimitsSettings)
    schema_registry: SchemaRegistrySettings | None = None
    value_format: str = DEFAULT_VALUE_FORMAT  # the mappings' default
    key_format: str = DEFAULT_KEY_FORMAT
    secrets: tuple[str, ...] = field(default=(), repr=False)  # every secret value, for redaction
