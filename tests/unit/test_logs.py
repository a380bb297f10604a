"""Log filters: librdkafka's harmless notices and its repeated lines."""

from __future__ import annotations

import logging

from connector.logs import RepeatLimit, TransientNotices
from tests.support.fakes import FakeClock


def record(text: str, level: int = logging.ERROR, name: str = "connector.librdkafka") -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, "%s", (text,), None)


def test_the_same_text_is_shown_at_most_burst_times_a_period():
    clock = FakeClock()
    limit = RepeatLimit(burst=3, period_s=60, clock=clock)
    texts = [f"SASL authentication error (after {300 + i}ms in state AUTH_REQ)" for i in range(10)]
    assert [limit.filter(record(t)) for t in texts] == [True] * 3 + [False] * 7
    assert limit.filter(record("another failure")) is True  # other texts are counted apart
    assert limit.filter(record(texts[0], level=logging.WARNING)) is True  # and other levels
    clock.now = 61
    again = record(texts[0])
    assert limit.filter(again) is True
    assert again.getMessage().endswith("(7 more like this not shown)")
    follow = record(texts[1])
    assert limit.filter(follow) is True and "not shown" not in follow.getMessage()


def test_remembered_texts_are_bounded():
    limit = RepeatLimit(burst=1, period_s=60, clock=FakeClock())
    for i in range(RepeatLimit.MAX_KEYS * 3):
        limit.filter(record(f"text {chr(65 + i % 26)} {i}" + "x" * (i % 7) + "y" * (i // 7)))
    assert len(limit._seen) <= RepeatLimit.MAX_KEYS


def test_coordinator_load_in_progress_is_no_warning(caplog):
    logger = logging.getLogger("test.librdkafka")
    logger.addFilter(TransientNotices())
    try:
        with caplog.at_level(logging.INFO):
            logger.warning(
                "GETPID [rdkafka#producer-1]: Failed to acquire idempotence PID from broker: "
                "Broker: Coordinator load in progress: retrying"
            )
            logger.warning("something else")
        assert [r.getMessage() for r in caplog.records] == ["something else"]
        caplog.clear()
        with caplog.at_level(logging.DEBUG):
            logger.warning("Coordinator load in progress")
        assert [(r.levelname, r.getMessage()) for r in caplog.records] == [("DEBUG", "Coordinator load in progress")]
    finally:
        logger.filters.clear()
