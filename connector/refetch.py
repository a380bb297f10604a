"""Read single messages again at their coordinates (topic, partition, offset), on a thread
of its own.

A dead letter whose value was dropped for size (dead_letter.py) points at its original
by its source coordinates; ``replay`` reads it there, if the source topic still holds
it. Those reads are broker round trips, so they run on the ``refetch`` thread, on a
consumer that never joins a group (``assign``, never ``subscribe``, never a commit), and
their results come back through a queue the pipeline's loop drains.

Each answer is one of: the message; "gone" (the topic or the offset is no longer there:
retention, compaction, a deleted topic), which the replay reports; or a failure (the
cluster did not answer), which stops the replay before its offset is committed.
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from .errors import KafkaFatalError
from .kafka import rdkafka_log
from .logs import redact
from .threads import daemon_thread

log = logging.getLogger("connector.refetch")

TIMEOUT_S = 10.0  # one read, in all; a cluster that does not answer in time stops the replay
_GONE = {KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC, KafkaError._UNKNOWN_PARTITION}


@dataclass
class Fetched:
    token: Any  # what the caller submitted the read with
    message: Any = None  # the message at the coordinates
    gone: str | None = None  # why it is not there any more
    failure: KafkaFatalError | None = None  # the cluster did not answer


def refetch_config(props: dict[str, str]) -> dict[str, Any]:
    conf: dict[str, Any] = {k: v for k, v in props.items() if k != "group.instance.id"}
    conf["group.id"] = conf.get("group.id", "userflux-connector") + ".refetch"  # never joined, never committed
    conf["enable.auto.commit"] = "false"
    conf["enable.partition.eof"] = "true"  # an offset past the last one answers at once
    conf["client.id"] = conf.get("client.id", "userflux-connector") + "-refetch"
    return conf


class SourceFetcher:
    def __init__(self, props: dict[str, str], factory: Callable[[dict], Any] = Consumer, timeout_s: float = TIMEOUT_S):
        self._conf = {**refetch_config(props), "logger": rdkafka_log}
        self._factory = factory
        self.timeout_s = timeout_s
        self._work: queue.SimpleQueue[tuple[Any, str, int, int] | None] = queue.SimpleQueue()
        self._done: queue.SimpleQueue[Fetched] = queue.SimpleQueue()
        self._thread: Any = None  # started by the first read: most replays need none
        self.pending = 0  # reads submitted and not yet taken back (the loop's thread only)

    def submit(self, token: Any, topic: str, partition: int, offset: int) -> None:
        if self._thread is None:
            self._thread = daemon_thread(self._run, "refetch")
            self._thread.start()
        self.pending += 1
        self._work.put((token, topic, partition, offset))

    def results(self) -> list[Fetched]:
        """The reads finished since the last call (on the loop's thread)."""
        out = []
        while True:
            try:
                out.append(self._done.get_nowait())
            except queue.Empty:
                break
        self.pending -= len(out)
        return out

    def close(self) -> None:
        if self._thread is not None:
            self._work.put(None)

    # -- the refetch thread ------------------------------------------------------------

    def _run(self) -> None:
        consumer = None
        try:
            while True:
                work = self._work.get()
                if work is None:
                    return
                token = work[0]
                try:
                    if consumer is None:
                        consumer = self._factory(self._conf)
                    self._done.put(self._read(consumer, *work))
                except Exception as exc:  # told to the loop, which stops the replay
                    why = redact(str(exc))
                    failure = KafkaFatalError(f"could not read {work[1]}[{work[2]}] offset {work[3]} again: {why}")
                    self._done.put(Fetched(token, failure=failure))
        finally:
            if consumer is not None:
                try:
                    consumer.close()
                except (KafkaException, RuntimeError):
                    pass

    def _read(self, consumer: Any, token: Any, topic: str, partition: int, offset: int) -> Fetched:
        where = f"{topic}[{partition}]"
        try:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=self.timeout_s, cached=False
            )
        except KafkaException as exc:
            error = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
            if error is not None and error.code() in _GONE:
                return Fetched(token, gone=f"the source topic no longer has {where}")
            raise
        if not low <= offset < high:
            held = f"it holds offsets {low} to {high - 1}" if high > low else "it is empty"
            return Fetched(token, gone=f"{where} no longer holds offset {offset} ({held})")
        consumer.assign([TopicPartition(topic, partition, offset)])
        try:
            deadline = time.monotonic() + self.timeout_s
            while time.monotonic() < deadline:
                message = consumer.poll(min(0.5, max(0.0, deadline - time.monotonic())))
                if message is None:
                    continue
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        return Fetched(token, gone=f"{where} no longer holds offset {offset} (compacted away)")
                    if error.code() in _GONE:
                        return Fetched(token, gone=f"the source topic no longer has {where}")
                    if error.fatal():
                        raise KafkaException(error)
                    continue  # librdkafka retries transient errors by itself
                if message.offset() == offset:
                    return Fetched(token, message=message)
                if message.offset() > offset:
                    return Fetched(token, gone=f"{where} no longer holds offset {offset} (compacted away)")
        finally:
            consumer.unassign()
        raise KafkaException(f"no answer within {self.timeout_s:g}s")
