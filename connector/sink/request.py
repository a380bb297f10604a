"""Build the body and the address of a batch request."""

from __future__ import annotations

import json
from typing import Iterable

BATCH_PATH = "/event/ingest/batch"

_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def batch_url(base_url: str) -> str:
    return base_url.rstrip("/") + BATCH_PATH


def batch_params(location_enrichment: bool) -> dict[str, str]:
    # UserFlux's SDKs always send the parameter, false included; so do we.
    return {"locationEnrichment": "true" if location_enrichment else "false"}


def encode_batch(events: Iterable[dict]) -> bytes:
    return _encoder.encode({"events": list(events)}).encode("utf-8")
