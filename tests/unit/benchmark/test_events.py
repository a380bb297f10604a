"""The benchmark's events have the shape of real tracker data."""

from __future__ import annotations

import json
import statistics
from datetime import datetime

from tests.benchmark.events import USERS, EventFactory, sent_at

MS = 1_764_320_000_123


def test_sent_at_is_written_in_the_four_forms_senders_use_each_exact_to_the_millisecond():
    forms = [sent_at(MS, form) for form in range(4)]
    assert forms[0] == MS
    assert forms[1] == 1_764_320_000.123
    assert forms[2].endswith(".123Z")
    assert forms[3][-6] in "+-" and not forms[3].endswith("Z")
    for text in forms[2:]:
        assert round(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000) == MS


def test_messages_are_300_to_400_bytes_of_nested_json_from_thousands_of_users():
    factory = EventFactory(seed=5)
    messages = [factory.message(MS) for _ in range(5_000)]
    docs = [json.loads(value) for _key, value, _kind in messages]
    assert 300 <= statistics.mean(len(value) for _key, value, _kind in messages) <= 400
    assert len({doc["event"] for doc in docs}) >= 8
    assert len({str(doc["user"]["id"]) for doc in docs if "user" in doc}) > 2_000
    assert 0 < sum("user" not in doc for doc in docs) < len(docs) / 2  # some visitors are anonymous
    assert all(isinstance(doc["properties"]["context"]["device"], dict) for doc in docs)
    assert {type(doc["sent_at"]) for doc in docs} == {int, float, str}
    assert USERS >= 1_000


def test_the_same_seed_makes_the_same_messages_so_runs_on_different_code_read_the_same_data():
    one, two, other = EventFactory(7), EventFactory(7), EventFactory(8)
    first = [one.message(MS) for _ in range(20)]
    assert [two.message(MS) for _ in range(20)] == first
    assert [other.message(MS) for _ in range(20)] != first
