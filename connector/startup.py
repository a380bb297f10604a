"""Everything the connector starts from, read and checked once: the settings (config/),
each mapping compiled (mapping/), and the TLS files read (sink/tls.py).

A user fixing a configuration file wants every problem at once, so the three are checked
on one list of problems and reported together, secrets masked; the per-message path
never looks at YAML again.
"""

from __future__ import annotations

import os
from collections.abc import Mapping as EnvMapping
from dataclasses import dataclass
from typing import Any

from .config import load
from .config.model import Settings, TlsSettings
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
    default_location_enrichment = settings.userflux.location_enrichment if settings is not None else False
    mappings = _compile_mappings(load.mapping_specs(tree), default_location_enrichment, problems)
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


def _compile_mappings(specs: list[Any], default_location_enrichment: bool, problems: Problems) -> list[Mapping]:
    compiled = [compile_mapping(spec, i, problems, default_location_enrichment) for i, spec in enumerate(specs)]
    return [mapping for mapping in compiled if mapping is not None]


def _check_tls_files(tls: TlsSettings, problems: Problems) -> None:
    """Read the files now: a mistake stops the start, not the first request."""
    if tls.ca_file or tls.client_cert_file:
        try:
            ssl_context(tls)
        except TlsFileError as exc:
            problems.add(f"userflux.tls.{exc.key}", str(exc))
