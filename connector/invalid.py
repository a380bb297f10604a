"""Where an invalid message goes: ``on_invalid`` decides.

A message that can never be delivered (not JSON, a mapping that cannot build an event,
an event UserFlux refuses on its own) is dead-lettered, skipped or stops the run. It only
counts as done, so the commit may pass it, once that is settled: skipped at once,
dead-lettered once the broker acknowledged the dead letter. In a dry run it is printed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from . import metrics
from .dead_letter import DeadLetterQueue
from .errors import FatalError, KafkaFatalError, StoppedOnInvalid
from .logs import RateLimitedLog
from .offsets import PartitionOffsets

log = logging.getLogger("connector.pipeline")


class InvalidRouter:
    def __init__(
        self,
        action: str,
        dead_letters: DeadLetterQueue | None,
        fail: Callable[[FatalError], None],
        progress: Callable[[], None],
        out: TextIO | None = None,
    ):
        self.action = "print" if out is not None else action  # out: a dry run prints them
        self.dead_letters = dead_letters
        self.fail = fail
        self.progress = progress
        self.out = out
        self._log = RateLimitedLog(log)  # one poison flood must not drown the log

    def route(self, message: Any, offsets: PartitionOffsets, reason: str, stage: str) -> None:
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        where = f"{topic}[{partition}] offset {offset}"
        metrics.messages_invalid.labels(topic, stage, self.action).inc()
        if self.action == "print":
            assert self.out is not None
            self.out.write(
                json.dumps(
                    {"invalid": reason, "stage": stage, "topic": topic, "partition": partition, "offset": offset},
                    ensure_ascii=False,
                )
                + "\n"
            )
            self.out.flush()
            offsets.done(offset)
        elif self.action == "stop":
            self.fail(StoppedOnInvalid(f"on_invalid is stop, and {where} is invalid ({stage}): {reason}"))
        elif self.action == "skip":
            self._log.log(logging.WARNING, "skipping %s (%s): %s", where, stage, reason)
            offsets.done(offset)
        else:
            self._log.log(logging.WARNING, "dead-lettering %s (%s): %s", where, stage, reason)
            self.dead_letter(message, offsets, offset, reason, stage)

    def dead_letter(
        self,
        message: Any,
        offsets: PartitionOffsets,
        offset: int,
        reason: str,
        stage: str,
        extra: Sequence[tuple[str, bytes]] = (),
        then: Callable[[], None] | None = None,
    ) -> None:
        """Write ``message``'s dead letter; ``offset`` (of ``offsets``) is done, and
        ``then`` called, once the broker acknowledged it. A replay's dead letter is the
        original message, tracked at the dead letter's own offset."""
        assert self.dead_letters is not None
        topic = message.topic()

        def done(error: KafkaFatalError | None) -> None:
            if error is None:
                offsets.done(offset)
                metrics.dead_letters.labels(topic, stage).inc()
                self.progress()
                if then is not None:
                    then()
            else:
                metrics.dead_letter_failures.labels(topic, stage).inc()
                self.fail(error)

        self.dead_letters.send(message, reason, stage, done, extra)

    def warn(self, msg: str, *args: Any) -> None:
        """A rate-limited warning about odd messages (redeliveries, unknown partitions)."""
        self._log.log(logging.WARNING, msg, *args)
