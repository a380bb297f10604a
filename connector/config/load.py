"""Read a configuration file into typed, validated Settings.

The file is read, parsed, expanded and checked once, at start, every problem recorded
with the key it is about. The mappings are the mapping language's (mapping/event.py
compiles them) and the TLS files are the sink's (sink/tls.py reads them): startup.py
runs all three and reports every problem together.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import re
from collections.abc import Hashable
from collections.abc import Mapping as EnvMapping
from typing import Any, NoReturn
from urllib.parse import urlsplit

import yaml

from ..errors import ConfigError
from ..validation import REQUIRED, Problems, Section, describe, join
from .envexpand import expand
from .model import (
    DEFAULT_BASE_URL,
    DEFAULT_DESTINATION,
    DEFAULT_KEY_FORMAT,
    DEFAULT_VALUE_FORMAT,
    KEY_FORMATS,
    ON_INVALID,
    VALUE_FORMATS,
    DeadLetterSettings,
    DestinationSettings,
    LimitsSettings,
    MetricsSettings,
    PipelineSettings,
    RetrySettings,
    SchemaRegistrySettings,
    Secret,
    Settings,
    TlsSettings,
    UserFluxSettings,
)

# librdkafka properties whose values are secrets: never echoed, always redacted.
_SECRET_PROPERTY = re.compile(r"password|secret|ssl\.key\.pem|oauthbearer\.config|sasl\.oauthbearer\.client\.secret")

# librdkafka-style keys of confluent-kafka's SchemaRegistryClient that the schema_registry
# section sets from its own keys (or that the connector owns), so the passthrough may not.
_REGISTRY_OWNED = {
    "url": "schema_registry.url",
    "basic.auth.user.info": "schema_registry.basic_auth",
    "basic.auth.credentials.source": "schema_registry.basic_auth",
    "bearer.auth.credentials.source": "schema_registry.bearer",
    "bearer.auth.token": "schema_registry.bearer.token",
    "bearer.auth.logical.cluster": "schema_registry.bearer.logical_cluster",
    "ssl.ca.location": "schema_registry.tls.ca_file",
    "ssl.certificate.location": "schema_registry.tls.client_cert_file",
    "ssl.key.location": "schema_registry.tls.client_key_file",
    "timeout": "schema_registry.request_timeout_s",
    "cache.capacity": "schema_registry.cache_size",
    "max.retries": "schema_registry.initial_backoff_ms (the connector retries itself, without blocking)",
    "retries.wait.ms": "schema_registry.initial_backoff_ms",
    "retries.max.wait.ms": "schema_registry.max_backoff_ms",
}

# The connector owns offset handling; these settings would break at-least-once delivery.
_OWNED_PROPERTIES = {
    "enable.auto.commit": "the connector commits offsets itself, only after UserFlux answered",
    "enable.auto.offset.store": "the connector stores offsets itself, only after UserFlux answered",
}


LOOPBACK_NAMES = {"localhost", "localhost.", "ip6-localhost"}


def is_secret_property(name: str) -> bool:
    return bool(_SECRET_PROPERTY.search(name))


def read_file(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError as exc:
        raise ConfigError(f"cannot read the configuration file: {exc.strerror}", source=path) from None


def read_tree(text: str, source: str, env: EnvMapping[str, str], problems: Problems) -> Any:
    """The file's YAML, ``${VAR}`` expanded (an unset one is a problem); ConfigError when
    it is not YAML at all."""
    try:
        tree = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(f"{where}{exc.problem or exc.context}", source=source) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML: {exc}", source=source) from None
    return expand(tree, env, problems)


def fail(problems: Problems, tree: Any, source: str) -> NoReturn:
    """Raise every problem together. A secret's value can reach another key
    (`batch_size: ${USERFLUX_API_KEY}`), whose error quotes what it found: mask every
    secret the file holds."""
    raise ConfigError([_mask(line, _secret_values(tree)) for line in problems.lines], source=source)


def _secret_values(tree: Any) -> list[str]:
    """The secrets of a parsed (maybe invalid) tree: the API key, secret Kafka properties."""
    if not isinstance(tree, dict):
        return []
    found = []
    userflux = tree.get("userflux")
    if isinstance(userflux, dict):
        found.append(userflux.get("api_key"))
        destinations = userflux.get("destinations")
        if isinstance(destinations, dict):
            found += [d.get("api_key") for d in destinations.values() if isinstance(d, dict)]
    dead_letter = tree.get("dead_letter")
    producer = dead_letter.get("producer") if isinstance(dead_letter, dict) else None
    registry = tree.get("schema_registry")
    client = None
    if isinstance(registry, dict):
        basic = registry.get("basic_auth")
        if isinstance(basic, dict):
            found.append(basic.get("password"))
        bearer = registry.get("bearer")
        if isinstance(bearer, dict):
            found.append(bearer.get("token"))
        client = registry.get("client")
    for props in (tree.get("kafka"), producer, client):
        if isinstance(props, dict):
            found += [value for key, value in props.items() if is_secret_property(str(key))]
    return [
        str(value).strip() for value in found if isinstance(value, (str, int, float)) and len(str(value).strip()) >= 4
    ]


def _mask(line: str, secrets: list[str]) -> str:
    for secret in sorted(secrets, key=len, reverse=True):
        line = line.replace(secret, "***")
    return line


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys instead of silently keeping the last one."""

    def construct_object(self, node, deep=False):
        try:
            return super().construct_object(node, deep=deep)
        except yaml.YAMLError:
            raise
        except Exception:  # e.g. `!!int abc`: the library's text would quote the value (maybe a secret)
            raise yaml.constructor.ConstructorError(
                None, None, f"the value cannot be read as {node.tag.rsplit(':', 1)[-1]}", node.start_mark
            ) from None

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *anchor`: merged keys may be overridden; SafeLoader flattens them
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, Hashable):
                break  # SafeLoader reports "found unhashable key" with its line
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def build(tree: Any, source: str, problems: Problems) -> Settings | None:
    """The typed settings of an expanded tree; None when it has problems. The mappings'
    own keys are not looked at here (startup.py compiles them), only that there are some."""
    if tree is None:
        problems.add("", "the file is empty; see config/ for examples")
        return None
    top = Section(tree, "", problems)
    if not top.ok:
        return None
    kafka = _kafka(top.raw("kafka"), problems)
    userflux = _userflux(top.section("userflux", required=True), problems)
    on_invalid = top.get_choice("on_invalid", ON_INVALID, default="dead_letter")
    dead_letter = _dead_letter(top.raw("dead_letter", None), on_invalid, problems)
    metrics = _metrics(top.section("metrics"), problems)
    pipeline = _pipeline(top.section("pipeline"), problems)
    limits = _limits(top.section("limits"))
    registry = _schema_registry(top.raw("schema_registry", None), problems)
    value_format = top.get_choice("value_format", VALUE_FORMATS, default=DEFAULT_VALUE_FORMAT)
    key_format = top.get_choice("key_format", KEY_FORMATS, default=DEFAULT_KEY_FORMAT)
    mappings = top.raw("mappings")
    if mappings is not None and (not isinstance(mappings, list) or not mappings):
        problems.add("mappings", f"expected a non-empty list of mappings, found {describe(mappings)}")
    top.finish()
    if problems or userflux is None:
        return None
    secrets = [d.api_key.reveal() for d in userflux.all_destinations]
    for props in (kafka, dead_letter.producer if dead_letter else {}):
        secrets += [v for k, v in props.items() if is_secret_property(k) and v]
    if registry is not None:
        secrets += [s.reveal() for s in (registry.password, registry.bearer_token) if s is not None]
        secrets += [v for k, v in registry.client.items() if is_secret_property(k) and v]
    return Settings(
        source=source,
        kafka=kafka,
        userflux=userflux,
        on_invalid=on_invalid,
        dead_letter=dead_letter,
        metrics=metrics,
        pipeline=pipeline,
        limits=limits,
        schema_registry=registry,
        value_format=value_format,
        key_format=key_format,
        secrets=tuple(secrets),
    )


def mapping_specs(tree: Any) -> list[Any]:
    """The mappings as written, for the mapping language to compile (``build`` said
    whether they are a list)."""
    raw = tree.get("mappings") if isinstance(tree, dict) else None
    return raw if isinstance(raw, list) else []


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine (where plain http reveals nothing on the wire)."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _defaults(cls: type) -> dict[str, Any]:
    """The defaults a settings class declares (model.py): the one place they are written."""
    return {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}


def _properties(raw: Any, where: str, problems: Problems) -> dict[str, str]:
    """A flat map of librdkafka properties, values as strings."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        problems.add(
            where, f"expected a mapping of librdkafka properties, found {describe(raw, secret=isinstance(raw, str))}"
        )  # it may hold a password
        return {}
    props: dict[str, str] = {}
    for key, value in raw.items():
        here = join(where, key)
        secret = is_secret_property(str(key))
        if isinstance(value, bool):
            props[str(key)] = "true" if value else "false"
        elif isinstance(value, (int, float, str)):
            props[str(key)] = str(value)
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            props[str(key)] = ",".join(value)  # e.g. bootstrap.servers as a list
        else:
            problems.add(
                here,
                f"expected a string, number or boolean (librdkafka properties are flat "
                f"dotted keys such as sasl.mechanism), found {describe(value, secret)}",
            )
    return props


def _kafka(raw: Any, problems: Problems) -> dict[str, str]:
    if raw is None:
        problems.add("kafka", "is required (at least bootstrap.servers and group.id)")
        return {}
    props = _properties(raw, "kafka", problems)
    if not isinstance(raw, dict):
        return props
    for key in ("bootstrap.servers", "group.id"):
        if problems.about(f"kafka.{key}"):
            continue  # e.g. an unset ${VAR}: already reported
        if not props.get(key, "").strip() and not (key == "bootstrap.servers" and props.get("metadata.broker.list")):
            typo = difflib.get_close_matches(key, [k for k in props if k != key], n=1, cutoff=0.8)
            problems.add(
                f"kafka.{key}", "is required" + (f" (found {typo[0]!r}: did you mean {key!r}?)" if typo else "")
            )
    for key, why in _OWNED_PROPERTIES.items():
        if key in props and props[key].lower() != "false":
            problems.add(f"kafka.{key}", f"must not be set: {why}")
    return props


def _userflux(section: Section, problems: Problems) -> UserFluxSettings | None:
    if not section.ok:
        return None
    d = _defaults(UserFluxSettings)
    base_url = section.get_str("base_url", d["base_url"])
    allow_insecure_http = section.get_bool("allow_insecure_http", d["allow_insecure_http"])
    _check_base_url(base_url, "userflux.base_url", allow_insecure_http, problems)
    # With destinations declared, every mapping may name one: the top-level key is then
    # optional (startup.py checks that no mapping needs it).
    declared = section.has("destinations") and isinstance(section.data["destinations"], dict)
    api_key = _api_key(section, "userflux.api_key", problems, required=not declared)
    retry_section, r = section.section("retry"), _defaults(RetrySettings)
    retry = RetrySettings(
        initial_backoff_ms=retry_section.get_int("initial_backoff_ms", r["initial_backoff_ms"], lo=1, hi=3_600_000),
        max_backoff_ms=retry_section.get_int("max_backoff_ms", r["max_backoff_ms"], lo=1, hi=3_600_000),
        max_attempts=retry_section.get_int("max_attempts", r["max_attempts"], lo=0),
    )
    retry_section.finish()
    if retry.initial_backoff_ms and retry.max_backoff_ms and retry.initial_backoff_ms > retry.max_backoff_ms:
        problems.add(
            "userflux.retry",
            f"initial_backoff_ms ({retry.initial_backoff_ms}) is above max_backoff_ms ({retry.max_backoff_ms})",
        )
    tls = _tls(section.section("tls"), problems)
    base_url = (base_url or "").rstrip("/")
    caps = _rate_caps(section)
    destinations = _destinations(section.section("destinations"), api_key, base_url, tls, allow_insecure_http, problems)
    settings = UserFluxSettings(
        base_url=base_url,
        api_key=Secret(api_key or ""),
        location_enrichment=section.get_bool("location_enrichment", d["location_enrichment"]),
        batch_size=section.get_int("batch_size", d["batch_size"], lo=1, hi=50),
        linger_ms=section.get_int("linger_ms", d["linger_ms"], lo=0, hi=600_000),
        max_in_flight=section.get_int("max_in_flight", d["max_in_flight"], lo=1, hi=256),
        request_timeout_s=section.get_float("request_timeout_s", d["request_timeout_s"], lo=0.1, hi=600),
        retry=retry,
        tls=tls,
        allow_insecure_http=bool(allow_insecure_http),
        max_events_per_second=caps[0],
        max_requests_per_second=caps[1],
        destinations=destinations,
    )
    section.finish()
    return settings


# A destination's name becomes a metric label and, under Kubernetes, part of an
# environment variable's name (USERFLUX_API_KEY_<NAME>): kept to what both take as it is.
DESTINATION_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")
# A cap of one event a minute is already odd; below, it is surely a unit mistake.
MIN_RATE, MAX_RATE = 0.01, 1_000_000


def _rate_caps(section: Section) -> tuple[float | None, float | None]:
    """``max_events_per_second`` and ``max_requests_per_second``: None when not set."""
    return (
        section.get_float("max_events_per_second", None, lo=MIN_RATE, hi=MAX_RATE),
        section.get_float("max_requests_per_second", None, lo=MIN_RATE, hi=MAX_RATE),
    )


def _destinations(
    section: Section,
    default_key: str | None,
    base_url: str,
    tls: TlsSettings,
    allow_insecure_http: bool | None,
    problems: Problems,
) -> tuple[DestinationSettings, ...]:
    """``userflux.destinations``: name -> its own key, and optionally its own base_url,
    tls and rate caps. What is about the server (base_url, tls) defaults to the top-level
    setting; what is about the project (the key, the caps) is the destination's own."""
    if not section.ok:
        return ()
    found = []
    for name, raw in section.data.items():
        where = join(section.path, name)
        section.known.append(name)
        if not isinstance(name, str) or not DESTINATION_NAME.fullmatch(name):
            problems.add(
                where,
                "a destination's name is lowercase letters, digits and '_', starting with a letter, "
                f"at most 32 characters; found {describe(name)}",
            )
            continue
        if name == DEFAULT_DESTINATION:
            problems.add(
                where,
                f"{DEFAULT_DESTINATION!r} is the top-level userflux.api_key's destination; "
                "choose another name (a mapping may say destination: default)",
            )
            continue
        entry = Section(raw, where, problems)
        if not entry.ok:
            continue
        own_url = entry.get_str("base_url", None)
        _check_base_url(own_url, join(where, "base_url"), allow_insecure_http, problems)
        key = _api_key(entry, join(where, "api_key"), problems, required=True)
        tls_section = entry.section("tls")  # when given, it replaces the top-level tls as a whole
        own_tls = _tls(tls_section, problems, where) if entry.has("tls") else tls
        caps = _rate_caps(entry)
        entry.finish()
        found.append(
            DestinationSettings(
                name=name,
                api_key=Secret(key or ""),
                base_url=own_url.rstrip("/") if own_url else base_url,
                tls=own_tls,
                max_events_per_second=caps[0],
                max_requests_per_second=caps[1],
            )
        )
    return tuple(found)


def _api_key(section: Section, where: str, problems: Problems, required: bool) -> str | None:
    api_key = section.get_str("api_key", REQUIRED if required else None, secret=True)
    if api_key is not None and any(ch.isspace() for ch in api_key.strip()):
        problems.add(where, "contains white space; expected the write key alone (without 'Bearer ')")
    return api_key.strip() if api_key is not None else None


def _check_base_url(base_url: str | None, where: str, allow_insecure_http: bool | None, problems: Problems) -> None:
    if base_url is None:
        return
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        problems.add(
            where, f"expected an http(s) URL like {DEFAULT_BASE_URL}, found {_without_credentials(base_url)!r}"
        )
    elif parts.query or parts.fragment:
        problems.add(
            where, "expected a URL without query or fragment; the connector adds the path and locationEnrichment"
        )
    elif parts.username is not None or parts.password is not None:
        problems.add(where, "expected a URL without user:password@; the write key is the api_key setting")
    elif parts.scheme == "http" and not is_loopback(parts.hostname) and allow_insecure_http is False:
        problems.add(
            where,
            f"plain http to {parts.hostname} would send the write key and the events "
            "unencrypted; use https, or set userflux.allow_insecure_http: true",
        )


def _tls(section: Section, problems: Problems, where: str = "userflux") -> TlsSettings:
    tls = TlsSettings(
        ca_file=section.get_str("ca_file", None),
        client_cert_file=section.get_str("client_cert_file", None),
        client_key_file=section.get_str("client_key_file", None),
    )
    section.finish()
    if tls.client_key_file and not tls.client_cert_file:
        problems.add(f"{where}.tls.client_key_file", "is set without client_cert_file")
    return tls


def _without_credentials(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return url.replace(f":{parts.password}@", ":***@", 1)


def _dead_letter(raw: Any, on_invalid: str | None, problems: Problems) -> DeadLetterSettings | None:
    if raw is None:
        if on_invalid == "dead_letter":
            problems.add(
                "dead_letter.topic",
                "is required when on_invalid is dead_letter (the default); set it, or choose on_invalid: skip or stop",
            )
        return None
    section = Section(raw, "dead_letter", problems)
    topic = section.get_str("topic")
    if topic is not None and (topic.startswith("^") or not re.fullmatch(r"[A-Za-z0-9._-]{1,249}", topic)):
        problems.add(
            "dead_letter.topic", f"expected a Kafka topic name (letters, digits, '.', '_', '-'), found {topic!r}"
        )
    producer = _properties(section.raw("producer", None), "dead_letter.producer", problems)
    section.finish()
    return DeadLetterSettings(topic=topic, producer=producer) if topic else None


def _metrics(section: Section, problems: Problems) -> MetricsSettings:
    d = _defaults(MetricsSettings)
    settings = MetricsSettings(
        enabled=section.get_bool("enabled", d["enabled"]),
        host=section.get_str("host", d["host"]),
        port=section.get_int("port", d["port"], lo=0, hi=65535),
        lag_interval_s=section.get_float("lag_interval_s", d["lag_interval_s"], lo=1, hi=300),
    )
    section.finish()
    return settings


def _pipeline(section: Section, problems: Problems) -> PipelineSettings:
    d = _defaults(PipelineSettings)
    settings = PipelineSettings(
        max_pending_messages=section.get_int("max_pending_messages", d["max_pending_messages"], lo=1),
        commit_interval_ms=section.get_int("commit_interval_ms", d["commit_interval_ms"], lo=10, hi=600_000),
        rebalance_timeout_s=section.get_float("rebalance_timeout_s", d["rebalance_timeout_s"], lo=0, hi=3600),
        shutdown_grace_s=section.get_float("shutdown_grace_s", d["shutdown_grace_s"], lo=0, hi=3600),
        stall_timeout_s=section.get_float("stall_timeout_s", d["stall_timeout_s"], lo=1, hi=86400),
        refused_exit_delay_s=section.get_float("refused_exit_delay_s", d["refused_exit_delay_s"], lo=0, hi=3600),
    )
    section.finish()
    return settings


def _schema_registry(raw: Any, problems: Problems) -> SchemaRegistrySettings | None:
    if raw is None:
        return None
    section = Section(raw, "schema_registry", problems)
    if not section.ok:
        return None
    d = _defaults(SchemaRegistrySettings)
    urls = _registry_urls(section.raw("url"), problems)
    username = password = token = cluster = None
    basic = section.section("basic_auth")
    if basic.data:
        username = basic.get_str("username")
        password = basic.get_str("password", secret=True)
        if username is not None and ":" in username:
            problems.add("schema_registry.basic_auth.username", "must not contain ':' (basic auth joins user:password)")
    basic.finish()
    bearer = section.section("bearer")
    if bearer.data:
        token = bearer.get_str("token", secret=True)
        cluster = bearer.get_str("logical_cluster", None)
    bearer.finish()
    if username is not None and token is not None:
        problems.add("schema_registry", "set basic_auth or bearer, not both")
    tls = _tls(section.section("tls"), problems, "schema_registry")
    client = _properties(section.raw("client", None), "schema_registry.client", problems)
    for key in client:
        if key in _REGISTRY_OWNED:
            problems.add(f"schema_registry.client.{key}", f"is set by {_REGISTRY_OWNED[key]}; set it there")
    settings = SchemaRegistrySettings(
        urls=tuple(urls),
        username=username,
        password=Secret(password) if password is not None else None,
        bearer_token=Secret(token.strip()) if token is not None else None,
        bearer_logical_cluster=cluster,
        tls=tls,
        request_timeout_s=section.get_float("request_timeout_s", d["request_timeout_s"], lo=0.1, hi=120),
        cache_size=section.get_int("cache_size", d["cache_size"], lo=1, hi=1_000_000),
        initial_backoff_ms=section.get_int("initial_backoff_ms", d["initial_backoff_ms"], lo=1, hi=3_600_000),
        max_backoff_ms=section.get_int("max_backoff_ms", d["max_backoff_ms"], lo=1, hi=3_600_000),
        client=client,
    )
    section.finish()
    if settings.initial_backoff_ms > settings.max_backoff_ms:
        problems.add(
            "schema_registry",
            f"initial_backoff_ms ({settings.initial_backoff_ms}) is above max_backoff_ms ({settings.max_backoff_ms})",
        )
    return settings


def _registry_urls(raw: Any, problems: Problems) -> list[str]:
    """One URL, a comma-separated list or a YAML list; each http(s), without credentials."""
    if raw is None:
        return []
    items = raw if isinstance(raw, list) else str(raw).split(",") if isinstance(raw, str) else None
    if not items or not all(isinstance(u, str) and u.strip() for u in items):
        problems.add("schema_registry.url", f"expected an http(s) URL or a list of them, found {describe(raw)}")
        return []
    urls = []
    for url in (u.strip().rstrip("/") for u in items):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            problems.add(
                "schema_registry.url",
                f"expected an http(s) URL like https://registry:8081, found {_without_credentials(url)!r}",
            )
        elif parts.username is not None or parts.password is not None:
            problems.add("schema_registry.url", "expected a URL without user:password@; use schema_registry.basic_auth")
        else:
            urls.append(url)
    return urls


def _limits(section: Section) -> LimitsSettings:
    d = _defaults(LimitsSettings)
    settings = LimitsSettings(
        # Below 1 KiB ordinary events would be refused; above 100 MiB is librdkafka's own ceiling.
        max_message_bytes=section.get_int("max_message_bytes", d["max_message_bytes"], lo=1024, hi=100 * 1_048_576),
        # Python's JSON decoder and encoder recurse: stay well below the interpreter's limit.
        max_nesting_depth=section.get_int("max_nesting_depth", d["max_nesting_depth"], lo=1, hi=500),
    )
    section.finish()
    return settings
