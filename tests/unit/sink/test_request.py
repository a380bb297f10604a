"""connector/sink/request.py: the address and body of a batch request."""

from __future__ import annotations

import json

import pytest

from connector.errors import InvalidMessage
from connector.mapping.mapper import decode_value
from connector.sink.request import BATCH_PATH, batch_params, batch_url, encode_batch


def test_batch_path_is_the_documented_one():
    assert BATCH_PATH == "/event/ingest/batch"


@pytest.mark.parametrize(
    "base",
    [
        "https://integration-api.userflux.co",
        "https://integration-api.userflux.co/",
        "https://integration-api.userflux.co//",
    ],
)
def test_batch_url(base):
    assert batch_url(base) == "https://integration-api.userflux.co/event/ingest/batch"


def test_location_enrichment_is_always_sent_false_included():
    assert batch_params(True) == {"locationEnrichment": "true"}
    assert batch_params(False) == {"locationEnrichment": "false"}


def test_encode_batch_is_compact_utf8_json_with_an_events_array():
    events = [
        {
            "name": "café_view",
            "userId": "ü1",
            "timestamp": 1690111645853,
            "properties": {"nested": {"list": [1, 2.5, None, True]}},
        },
        {"name": "b", "anonymousId": "a"},
    ]
    body = encode_batch(events)
    assert isinstance(body, bytes)
    assert json.loads(body.decode("utf-8")) == {"events": events}
    assert b" " not in body  # compact separators
    assert "café_view".encode() in body  # not \u-escaped


def test_encode_batch_accepts_any_iterable():
    assert json.loads(encode_batch(iter([{"name": "x"}]))) == {"events": [{"name": "x"}]}


@pytest.mark.parametrize("raw", [b'{"v": NaN}', b'{"v": Infinity}', b'{"v": -Infinity}', b'{"v": 1e400}'])
def test_no_event_can_hold_a_number_json_cannot_carry(raw):
    # orjson would write NaN and infinity as null, silently. They never reach an event:
    # decoding refuses them (and mapping constants holding them are refused at start,
    # tests/unit/mapping/test_fields.py), so encode_batch never meets one.
    with pytest.raises(InvalidMessage) as refused:
        decode_value(raw)
    assert refused.value.stage == "deserialize"


def test_integers_beyond_64_bits_are_written_exactly():
    events = [{"name": "x", "properties": {"big": 2**70, "small": -(2**63), "u64": 2**64 - 1}}]
    assert json.loads(encode_batch(events)) == {"events": events}


@pytest.mark.parametrize("bad", ["\ud800", "a\udfffb"])
def test_a_lone_surrogate_cannot_be_encoded_and_says_so(bad):
    with pytest.raises((ValueError, TypeError)):
        encode_batch([{"name": "x", "properties": {"v": json.loads(f'"{bad}"')}}])
