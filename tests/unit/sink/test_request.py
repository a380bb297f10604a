"""connector/sink/request.py: the address and body of a batch request."""

from __future__ import annotations

import json

import pytest

from connector.sink.request import BATCH_PATH, batch_params, batch_url, encode_batch


def test_batch_path_is_the_documented_one():
    assert BATCH_PATH == "/event/ingest/batch"


@pytest.mark.parametrize("base", [
    "https://integration-api.userflux.co",
    "https://integration-api.userflux.co/",
    "https://integration-api.userflux.co//",
])
def test_batch_url(base):
    assert batch_url(base) == "https://integration-api.userflux.co/event/ingest/batch"


def test_location_enrichment_is_always_sent_false_included():
    assert batch_params(True) == {"locationEnrichment": "true"}
    assert batch_params(False) == {"locationEnrichment": "false"}


def test_encode_batch_is_compact_utf8_json_with_an_events_array():
    events = [{"name": "café_view", "userId": "ü1", "timestamp": 1690111645853,
               "properties": {"nested": {"list": [1, 2.5, None, True]}}},
              {"name": "b", "anonymousId": "a"}]
    body = encode_batch(events)
    assert isinstance(body, bytes)
    assert json.loads(body.decode("utf-8")) == {"events": events}
    assert b" " not in body  # compact separators
    assert "café_view".encode("utf-8") in body  # not \u-escaped


def test_encode_batch_accepts_any_iterable():
    assert json.loads(encode_batch(iter([{"name": "x"}]))) == {"events": [{"name": "x"}]}


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_encode_batch_refuses_non_json_numbers(bad):
    with pytest.raises(ValueError):
        encode_batch([{"name": "x", "properties": {"v": bad}}])
