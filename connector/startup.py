"""Everything the connector starts from, read and checked once: the settings (config/),
each mapping compiled (mapping/), and the TLS files read (sink/tls.py).

A user fixing a configuration file wants every problem at once, so the three are checked
on one list of problems and reported together, secrets masked; the per-message path
never looks at YAML again.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping as EnvMapping
from dataclasses import dataclass
from typing import Any

from .config import load
from .config.model import DEFAULT_DESTINATION, REGISTRY_FORMATS, Settings, TlsSettings, UserFluxSettings
from .formats.registry import make_client
from .mapping.event import Mapping, compile_mapping
from .sink.tls import TlsFileError, ssl_context
from .validation import Problems


@dataclass(frozen=True)
class Startup:
    settings: Settings
    mappings: tuple[Mapping, ...]


def load_config(path: str, env: EnvMapping[str, str] | None = None) -> Startup:
    """Read ``path``; ConfigError listing every problem found."""
    return parse_config(load.read_file(path), source=path, env=env)


def parse_config(text: str, source: str = "<config>", env: EnvMapping[str, str] | None = None) -> Startup:
    problems = Problems()
    tree = load.read_tree(text, source, os.environ if env is None else env, problems)
    settings = load.build(tree, source, problems)
    if settings is not None:
        _check_tls_files(settings.userflux.tls, problems)
        for destination in settings.userflux.destinations:
            if destination.tls is not settings.userflux.tls:  # its own, not the top-level one
                _check_tls_files(destination.tls, problems, destination.key("tls"))
    default_location_enrichment = settings.userflux.location_enrichment if settings is not None else False
    formats = (settings.value_format, settings.key_format) if settings is not None else ("json", "string")
    specs = load.mapping_specs(tree)
    mappings = _compile_mappings(specs, default_location_enrichment, formats, problems)
    if settings is not None:
        _check_registry(settings, mappings, problems)
        _check_destinations(specs, settings.userflux, problems)
    if settings is not None and settings.dead_letter is not None:
        topic = settings.dead_letter.topic
        for mapping in mappings:
            if mapping.matches(topic):
                problems.add(
                    "dead_letter.topic",
                    f"{topic!r} matches {mapping.label}: the connector would read "
                    "its own dead letters; pick another topic or narrow the mapping",
                )
    if problems or settings is None:
        load.fail(problems, tree, source)
    return Startup(settings, tuple(mappings))


def _compile_mappings(
    specs: list[Any], default_location_enrichment: bool, formats: tuple[str, str], problems: Problems
) -> list[Mapping]:
    compiled = [
        compile_mapping(spec, i, problems, default_location_enrichment, *formats) for i, spec in enumerate(specs)
    ]
    return [mapping for mapping in compiled if mapping is not None]


def _check_registry(settings: Settings, mappings: list[Mapping], problems: Problems) -> None:
    """A registry format needs a registry; and the registry's settings must make a client
    (its TLS files read, its passthrough keys known) before anything starts."""
    registry = settings.schema_registry
    if registry is None or not registry.urls:
        for mapping in mappings:
            for field, fmt in (("value_format", mapping.value_format), ("key_format", mapping.key_format)):
                if fmt in REGISTRY_FORMATS:
                    problems.add(
                        f"mappings[{mapping.index}].{field}",
                        f"{fmt} is read through a schema registry: set schema_registry.url",
                    )
        if registry is not None and not problems.about("schema_registry.url"):
            problems.add("schema_registry.url", "is required")
        return
    if registry.tls.ca_file or registry.tls.client_cert_file:
        try:
            ssl_context(registry.tls)
        except TlsFileError as exc:
            problems.add(f"schema_registry.tls.{exc.key}", str(exc))
            return
    try:
        make_client(registry)
    except (ValueError, TypeError, OSError) as exc:
        problems.add("schema_registry.client", str(exc))


def _check_destinations(specs: list[Any], userflux: UserFluxSettings, problems: Problems) -> None:
    """Each mapping's ``destination`` is one that is declared (checked on the mappings as
    written, so a typo is reported with the mapping's other problems), and a mapping
    without one has the top-level key to use."""
    declared = [d.name for d in userflux.destinations]
    known = ", ".join(declared) or "none"
    for index, spec in enumerate(specs):
        if not isinstance(spec, dict):
            continue
        name = spec.get("destination", DEFAULT_DESTINATION)
        if not isinstance(name, str):
            continue  # compile_mapping reports it
        where = f"mappings[{index}].destination"
        if name == DEFAULT_DESTINATION:
            if userflux.default_destination is None:
                problems.add(
                    f"mappings[{index}]",
                    f"names no destination, and userflux.api_key is not set: set it, or give the mapping "
                    f"a destination (declared under userflux.destinations: {known})",
                )
        elif name not in declared:
            close = difflib.get_close_matches(name, declared, n=1)
            problems.add(
                where,
                f"no destination {name!r} under userflux.destinations"
                + (f" (did you mean {close[0]!r}?)" if close else f" (declared: {known})"),
            )


def _check_tls_files(tls: TlsSettings, problems: Problems, where: str = "userflux.tls") -> None:
    """Read the files now: a mistake stops the start, not the first request."""
    if tls.ca_file or tls.client_cert_file:
        try:
            ssl_context(tls)
        except TlsFileError as exc:
            problems.add(f"{where}.{exc.key}", str(exc))
