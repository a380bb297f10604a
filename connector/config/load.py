"""Read a configuration file into typed, validated, compiled Settings.

The file is read, parsed, expanded and checked once, at start: every problem is reported
together, naming the key, and the mappings are compiled so the per-message path never
looks at YAML again.
"""

from __future__ import annotations

import difflib
import os
import re
from typing import Any, Hashable, Mapping as EnvMapping
from urllib.parse import urlsplit

import yaml

from ..errors import ConfigError
from ..mapping.event import Mapping, compile_mapping
from ..sink.tls import TlsFileError, is_loopback, ssl_context
from .envexpand import expand
from .model import (
    ON_INVALID,
    DeadLetterSettings,
    LimitsSettings,
    MetricsSettings,
    PipelineSettings,
    RetrySettings,
    Secret,
    Settings,
    TlsSettings,
    UserFluxSettings,
)
from .reader import Problems, Section, describe, join

# librdkafka properties whose values are secrets: never echoed, always redacted.
_SECRET_PROPERTY = re.compile(r"password|secret|ssl\.key\.pem|oauthbearer\.config|sasl\.oauthbearer\.client\.secret")

# The connector owns offset handling; these settings would break at-least-once delivery.
_OWNED_PROPERTIES = {
    "enable.auto.commit": "the connector commits offsets itself, only after UserFlux answered",
    "enable.auto.offset.store": "the connector stores offsets itself, only after UserFlux answered",
}


def is_secret_property(name: str) -> bool:
    return bool(_SECRET_PROPERTY.search(name))


def load_settings(path: str, env: EnvMapping[str, str] | None = None) -> Settings:
    """Read ``path``; raise ConfigError listing every problem found."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise ConfigError(f"cannot read the configuration file: {exc.strerror}", source=path) from None
    return parse_settings(text, source=path, env=os.environ if env is None else env)


def parse_settings(text: str, source: str = "<config>", env: EnvMapping[str, str] | None = None) -> Settings:
    try:
        tree = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(f"{where}{exc.problem or exc.context}", source=source) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML: {exc}", source=source) from None
    problems = Problems()
    tree = expand(tree, os.environ if env is None else env, problems)
    settings = _build(tree, source, problems)
    if problems:
        # A secret's value can reach another key (`batch_size: ${USERFLUX_API_KEY}`), whose
        # error quotes what it found: mask every secret the file holds.
        raise ConfigError([_mask(line, _secret_values(tree)) for line in problems.lines], source=source)
    assert settings is not None
    return settings


def _secret_values(tree: Any) -> list[str]:
    """The secrets of a parsed (maybe invalid) tree: the API key, secret Kafka properties."""
    if not isinstance(tree, dict):
        return []
    found = []
    userflux = tree.get("userflux")
    if isinstance(userflux, dict):
        found.append(userflux.get("api_key"))
    dead_letter = tree.get("dead_letter")
    producer = dead_letter.get("producer") if isinstance(dead_letter, dict) else None
    for props in (tree.get("kafka"), producer):
        if isinstance(props, dict):
            found += [value for key, value in props.items() if is_secret_property(str(key))]
    return [str(value).strip() for value in found if isinstance(value, (str, int, float)) and len(str(value).strip()) >= 4]


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
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _build(tree: Any, source: str, problems: Problems) -> Settings | None:
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
    mappings = _mappings(top.raw("mappings"), userflux.location_enrichment if userflux else False, problems)
    top.finish()
    if dead_letter and mappings:
        for mapping in mappings:
            if mapping.matches(dead_letter.topic):
                problems.add("dead_letter.topic", f"{dead_letter.topic!r} matches {mapping.label}: "
                             "the connector would read its own dead letters; pick another topic or narrow the mapping")
    if problems:
        return None
    secrets = [userflux.api_key.reveal()]
    for props in (kafka, dead_letter.producer if dead_letter else {}):
        secrets += [v for k, v in props.items() if is_secret_property(k) and v]
    return Settings(
        source=source, kafka=kafka, userflux=userflux, on_invalid=on_invalid, dead_letter=dead_letter,
        metrics=metrics, pipeline=pipeline, mappings=tuple(mappings), limits=limits, secrets=tuple(secrets),
    )


def _properties(raw: Any, where: str, problems: Problems) -> dict[str, str]:
    """A flat map of librdkafka properties, values as strings."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        problems.add(where, f"expected a mapping of librdkafka properties, found "
                            f"{describe(raw, secret=isinstance(raw, str))}")  # it may hold a password
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
            problems.add(here, f"expected a string, number or boolean (librdkafka properties are flat "
                               f"dotted keys such as sasl.mechanism), found {describe(value, secret)}")
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
            problems.add(f"kafka.{key}", "is required" + (f" (found {typo[0]!r}: did you mean {key!r}?)" if typo else ""))
    for key, why in _OWNED_PROPERTIES.items():
        if key in props and props[key].lower() != "false":
            problems.add(f"kafka.{key}", f"must not be set: {why}")
    return props


def _userflux(section: Section, problems: Problems) -> UserFluxSettings | None:
    if not section.ok:
        return None
    base_url = section.get_str("base_url", "https://integration-api.userflux.co")
    allow_insecure_http = section.get_bool("allow_insecure_http", False)
    if base_url is not None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            problems.add("userflux.base_url", f"expected an http(s) URL like https://integration-api.userflux.co, "
                                              f"found {_without_credentials(base_url)!r}")
        elif parts.query or parts.fragment:
            problems.add("userflux.base_url", "expected a URL without query or fragment; the connector adds the path and locationEnrichment")
        elif parts.username is not None or parts.password is not None:
            problems.add("userflux.base_url", "expected a URL without user:password@; the write key is userflux.api_key")
        elif parts.scheme == "http" and not is_loopback(parts.hostname) and allow_insecure_http is False:
            problems.add("userflux.base_url", f"plain http to {parts.hostname} would send the write key and the events "
                                              "unencrypted; use https, or set userflux.allow_insecure_http: true")
    api_key = section.get_str("api_key", secret=True)
    if api_key is not None and any(ch.isspace() for ch in api_key.strip()):
        problems.add("userflux.api_key", "contains white space; expected the write key alone (without 'Bearer ')")
    retry_section = section.section("retry")
    retry = RetrySettings(
        initial_backoff_ms=retry_section.get_int("initial_backoff_ms", 250, lo=1, hi=3_600_000),
        max_backoff_ms=retry_section.get_int("max_backoff_ms", 30_000, lo=1, hi=3_600_000),
        max_attempts=retry_section.get_int("max_attempts", 0, lo=0),
    )
    retry_section.finish()
    if retry.initial_backoff_ms and retry.max_backoff_ms and retry.initial_backoff_ms > retry.max_backoff_ms:
        problems.add("userflux.retry", f"initial_backoff_ms ({retry.initial_backoff_ms}) is above max_backoff_ms ({retry.max_backoff_ms})")
    tls = _tls(section.section("tls"), problems)
    settings = UserFluxSettings(
        base_url=(base_url or "").rstrip("/"),
        api_key=Secret((api_key or "").strip()),
        location_enrichment=section.get_bool("location_enrichment", False),
        batch_size=section.get_int("batch_size", 50, lo=1, hi=50),
        linger_ms=section.get_int("linger_ms", 200, lo=0, hi=600_000),
        max_in_flight=section.get_int("max_in_flight", 8, lo=1, hi=256),
        request_timeout_s=section.get_float("request_timeout_s", 10.0, lo=0.1, hi=600),
        retry=retry,
        tls=tls,
        allow_insecure_http=bool(allow_insecure_http),
    )
    section.finish()
    return settings


def _tls(section: Section, problems: Problems) -> TlsSettings:
    tls = TlsSettings(
        ca_file=section.get_str("ca_file", None),
        client_cert_file=section.get_str("client_cert_file", None),
        client_key_file=section.get_str("client_key_file", None),
    )
    section.finish()
    if tls.client_key_file and not tls.client_cert_file:
        problems.add("userflux.tls.client_key_file", "is set without client_cert_file")
    elif tls.ca_file or tls.client_cert_file:
        try:
            ssl_context(tls)  # read the files now: a mistake stops the start, not the first request
        except TlsFileError as exc:
            problems.add(f"userflux.tls.{exc.key}", str(exc))
    return tls


def _without_credentials(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return url.replace(f":{parts.password}@", ":***@", 1)


def _dead_letter(raw: Any, on_invalid: str | None, problems: Problems) -> DeadLetterSettings | None:
    if raw is None:
        if on_invalid == "dead_letter":
            problems.add("dead_letter.topic", "is required when on_invalid is dead_letter (the default); "
                                              "set it, or choose on_invalid: skip or stop")
        return None
    section = Section(raw, "dead_letter", problems)
    topic = section.get_str("topic")
    if topic is not None and (topic.startswith("^") or not re.fullmatch(r"[A-Za-z0-9._-]{1,249}", topic)):
        problems.add("dead_letter.topic", f"expected a Kafka topic name (letters, digits, '.', '_', '-'), found {topic!r}")
    producer = _properties(section.raw("producer", None), "dead_letter.producer", problems)
    section.finish()
    return DeadLetterSettings(topic=topic, producer=producer) if topic else None


def _metrics(section: Section, problems: Problems) -> MetricsSettings:
    settings = MetricsSettings(
        enabled=section.get_bool("enabled", True),
        host=section.get_str("host", "0.0.0.0"),
        port=section.get_int("port", 9464, lo=0, hi=65535),
        lag_interval_s=section.get_float("lag_interval_s", 10.0, lo=1, hi=300),
    )
    section.finish()
    return settings


def _pipeline(section: Section, problems: Problems) -> PipelineSettings:
    settings = PipelineSettings(
        max_pending_messages=section.get_int("max_pending_messages", 10_000, lo=1),
        commit_interval_ms=section.get_int("commit_interval_ms", 1_000, lo=10, hi=600_000),
        rebalance_timeout_s=section.get_float("rebalance_timeout_s", 10.0, lo=0, hi=3600),
        shutdown_grace_s=section.get_float("shutdown_grace_s", 30.0, lo=0, hi=3600),
        stall_timeout_s=section.get_float("stall_timeout_s", 300.0, lo=1, hi=86400),
        refused_exit_delay_s=section.get_float("refused_exit_delay_s", 30.0, lo=0, hi=3600),
    )
    section.finish()
    return settings


def _limits(section: Section) -> LimitsSettings:
    defaults = LimitsSettings()
    settings = LimitsSettings(
        # Below 1 KiB ordinary events would be refused; above 100 MiB is librdkafka's own ceiling.
        max_message_bytes=section.get_int("max_message_bytes", defaults.max_message_bytes, lo=1024, hi=100 * 1_048_576),
        # Python's JSON decoder and encoder recurse: stay well below the interpreter's limit.
        max_nesting_depth=section.get_int("max_nesting_depth", defaults.max_nesting_depth, lo=1, hi=500),
    )
    section.finish()
    return settings


def _mappings(raw: Any, default_location_enrichment: bool, problems: Problems) -> list[Mapping]:
    if raw is None:
        return []
    if not isinstance(raw, list) or not raw:
        problems.add("mappings", f"expected a non-empty list of mappings, found {describe(raw)}")
        return []
    compiled = [compile_mapping(item, i, problems, default_location_enrichment) for i, item in enumerate(raw)]
    return [m for m in compiled if m is not None]
