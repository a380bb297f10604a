"""The connector's exceptions."""

from __future__ import annotations

from connector.errors import InvalidMessage


def test_an_invalid_message_reason_is_bounded():
    reason = InvalidMessage("x" * 5000, "map").reason
    assert len(reason) < 1100
    assert reason.endswith("... (4000 more characters)")
    assert InvalidMessage("short").reason == "short"
