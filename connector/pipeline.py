"""The driver: consume, map, batch, send, mark done, commit.

One thread owns all delivery state (offsets, open batches, dead letters): this one. It
reads messages, maps them (mapping/), batches them (batcher.py), hands full batches to
the sender pool (sink/), and takes the results back from the completion queue to mark
messages done (offsets.py), so the checkpoint (checkpoint.py) can commit.

Rebalance callbacks run on this thread too, inside ``consume()``. On revocation the
revoked partitions get ``rebalance_timeout_s`` to finish; what is done is committed
while they are still ours, the rest is abandoned (the next owner reads it again).
"""

from __future__ import annotations

import json
import logging
import queue
import signal
import sys
import threading
import time
from collections import Counter
from typing import Any, TextIO

from . import metrics
from .batcher import Batch, Batcher, Item
from .checkpoint import Checkpoint
from .config.model import Settings
from .dead_letter import DeadLetterQueue
from .errors import FatalError, InvalidMessage, KafkaFatalError, StoppedOnInvalid
from .health import Status
from .logs import RateLimitedLog
from .mapping.mapper import MessageMapper
from .offsets import OffsetTracker, PartitionOffsets
from .sink.client import UserFluxClient
from .sink.dryrun import PrintingSender
from .sink.pool import SenderPool
from .sink.retry import RetryPolicy
from .sink.sender import BatchResult, BatchSender
from .source import KafkaSource, Key

log = logging.getLogger("connector.pipeline")

CONSUME_BATCH = 500  # messages per consume() call
POLL_S = 0.05  # longest wait in consume(); completions are looked at between calls


class Pipeline:
    def __init__(self, settings: Settings, dry_run: bool = False, out: TextIO | None = None):
        self.settings = settings
        self.dry_run = dry_run
        self.out = out or sys.stdout
        uf, pipe = settings.userflux, settings.pipeline

        self.mapper = MessageMapper(settings.mappings, settings.limits)
        self.tracker = OffsetTracker()
        self.batcher = Batcher(uf.batch_size, uf.linger_ms / 1000)
        self.completions: queue.SimpleQueue[BatchResult] = queue.SimpleQueue()
        self.stop_sending = threading.Event()
        self.client: UserFluxClient | None = None
        if dry_run:
            sender: Any = PrintingSender(self.out)
        else:
            self.client = UserFluxClient(uf.base_url, uf.api_key, uf.request_timeout_s, uf.max_in_flight, tls=uf.tls)
            policy = RetryPolicy(uf.retry.initial_backoff_ms / 1000, uf.retry.max_backoff_ms / 1000, uf.retry.max_attempts)
            sender = BatchSender(self.client, policy, self.stop_sending)
        self.pool = SenderPool(sender, 1 if dry_run else uf.max_in_flight, self.completions)

        kafka = dict(settings.kafka)
        if dry_run:
            # Never join the production group: it would take partitions from the real connector.
            kafka["group.id"] = kafka["group.id"] + ".dry-run"
        self.checkpoint = Checkpoint(None, self.tracker, pipe.commit_interval_ms / 1000, enabled=not dry_run)
        self.source = KafkaSource(kafka, self, on_commit=self.checkpoint.on_commit_result)
        self.checkpoint.source = self.source
        self.dead_letters: DeadLetterQueue | None = None
        if settings.on_invalid == "dead_letter" and not dry_run:
            assert settings.dead_letter is not None
            self.dead_letters = DeadLetterQueue(settings.kafka, settings.dead_letter)

        self.status = Status(stall_after_s=max(60.0, 2 * pipe.rebalance_timeout_s + 10))
        self.in_flight: dict[int, Batch] = {}
        self.fatal: FatalError | None = None
        self._stopping = False
        self._hurry = False  # a second signal: skip what is left of the grace
        self._closing = False
        self._paused: set[Key] | None = None  # the paused partitions while backpressure holds
        self._pending = 0  # messages read and not yet committable, as of the last step
        self._invalid_log = RateLimitedLog(log)

    # -- running ---------------------------------------------------------------------

    def run(self) -> int:
        """Run until stopped by a signal or a fatal error; return the exit code."""
        topics = self.mapper.subscription()
        uf = self.settings.userflux
        log.info("consumer group %r reading %s; %s in batches of up to %d, %d in flight",
                 self.source_group, ", ".join(topics),
                 "printing (dry run, nothing committed)" if self.dry_run else f"delivering to {uf.base_url}",
                 uf.batch_size, uf.max_in_flight)
        self._check_dead_letter_topic()
        self.source.subscribe(topics)
        try:
            while not self._stopping:
                self._step()
        except FatalError as exc:
            self._fail(exc)
        except Exception as exc:  # a bug: still commit what is done and leave the group cleanly
            log.exception("internal error in the pipeline loop")
            self._fail(FatalError(f"internal error: {exc!r}"))
        return self._shutdown()

    @property
    def source_group(self) -> str:
        return self.settings.kafka.get("group.id", "") + (".dry-run" if self.dry_run else "")

    def request_stop(self, signum: int | None = None) -> None:
        """Called from a signal handler: only flags are set here."""
        name = signal.Signals(signum).name if signum else "stop request"
        if not self._stopping:
            self._stopping = True
            log.info("%s: stopping; delivering what is in flight (up to %.0fs), then committing",
                     name, self.settings.pipeline.shutdown_grace_s)
        else:
            self._hurry = True
            log.warning("%s again: skipping the rest of the grace period", name)

    def _step(self) -> None:
        timeout = POLL_S
        due_in = self.batcher.next_due_in()
        if due_in is not None:
            timeout = min(timeout, due_in)
        # Never read more than fits under max_pending_messages (at least one, so that
        # rebalance callbacks are still served while paused).
        room = self.settings.pipeline.max_pending_messages - self._pending
        messages = self.source.consume(max(1, min(CONSUME_BATCH, room)), timeout)
        if messages:
            counts = Counter(m.topic() for m in messages)
            for topic, n in counts.items():
                metrics.messages_consumed.labels(topic).inc(n)
            for message in messages:
                self._ingest(message)
        for batch in self.batcher.due():
            self._send(batch)
        self._drain()
        if self.dead_letters is not None:
            self.dead_letters.poll(0)
            if self.dead_letters.fatal is not None:
                self._fail(self.dead_letters.fatal)
        self.checkpoint.maybe_commit()
        self._apply_backpressure()
        self.status.beat()
        metrics.in_flight_batches.set(len(self.in_flight))

    # -- consume, map, batch -------------------------------------------------------------

    def _ingest(self, message: Any) -> None:
        offsets = self.tracker.get(message.topic(), message.partition())
        if not offsets.track(message.offset()):
            # At or below an offset already read in this assignment: the first copy is
            # being handled. librdkafka does not rewind on its own, so say it loudly.
            self._invalid_log.log(logging.WARNING, "ignoring %s[%d] offset %d: already read in this assignment",
                                  message.topic(), message.partition(), message.offset())
            return
        try:
            mapping, event = self.mapper.map(message)
        except InvalidMessage as exc:
            self._invalid(message, offsets, exc.reason, exc.stage)
            return
        if event is None:
            metrics.messages_skipped.labels(message.topic()).inc()
            offsets.done(message.offset())
            return
        full = self.batcher.add(Item(event, message, offsets), mapping.location_enrichment)
        if full is not None:
            self._send(full)

    def _send(self, batch: Batch) -> None:
        self.in_flight[batch.id] = batch
        self.pool.submit(batch)

    # -- mark done -------------------------------------------------------------------------

    def _drain(self, wait_s: float = 0.0) -> None:
        """Take finished batches off the completion queue; wait up to wait_s for the first."""
        try:
            result = self.completions.get(timeout=wait_s) if wait_s > 0 else self.completions.get_nowait()
        except queue.Empty:
            return
        while True:
            self._complete(result)
            try:
                result = self.completions.get_nowait()
            except queue.Empty:
                return

    def _complete(self, result: BatchResult) -> None:
        self.in_flight.pop(result.batch.id, None)
        if result.delivered:
            for item in result.delivered:
                item.done()
            for topic, n in Counter(item.message.topic() for item in result.delivered).items():
                metrics.events_delivered.labels(topic).inc(n)
            metrics.last_delivery.set_to_current_time()
        for item, reason in result.refused:
            if item.offsets.owned:  # a revoked partition's next owner decides again
                self._invalid(item.message, item.offsets, reason, "deliver")
        if result.failure is not None:
            self._fail(result.failure)

    def _invalid(self, message: Any, offsets: PartitionOffsets, reason: str, stage: str) -> None:
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        where = f"{topic}[{partition}] offset {offset}"
        action = "print" if self.dry_run else self.settings.on_invalid
        metrics.messages_invalid.labels(topic, stage, action).inc()
        if self.dry_run:
            self.out.write(json.dumps({"invalid": reason, "stage": stage, "topic": topic,
                                       "partition": partition, "offset": offset}, ensure_ascii=False) + "\n")
            self.out.flush()
            offsets.done(offset)
        elif action == "stop":
            self._fail(StoppedOnInvalid(f"on_invalid is stop, and {where} is invalid ({stage}): {reason}"))
        elif action == "skip":
            self._invalid_log.log(logging.WARNING, "skipping %s (%s): %s", where, stage, reason)
            offsets.done(offset)
        else:
            assert self.dead_letters is not None
            self._invalid_log.log(logging.WARNING, "dead-lettering %s (%s): %s", where, stage, reason)

            def done(error: KafkaFatalError | None) -> None:
                if error is None:
                    offsets.done(offset)
                else:
                    self._fail(error)

            self.dead_letters.send(message, reason, stage, done)

    def _fail(self, error: FatalError) -> None:
        if self.fatal is None:
            self.fatal = error
            log.error("%s", error)
        self._stopping = True

    # -- backpressure ----------------------------------------------------------------------

    def _apply_backpressure(self) -> None:
        pending = self._pending = self.tracker.pending  # nothing changes it until the next step
        metrics.pending_messages.set(pending)
        limit = self.settings.pipeline.max_pending_messages
        if self._paused is None:
            if pending >= limit:
                self._paused = self.source.assignment()
                self.source.pause(self._paused)
                metrics.paused.set(1)
                log.info("%d messages pending (limit %d): pausing consumption until half are done", pending, limit)
        elif pending <= limit // 2:
            self.source.resume(self._paused & self.source.assignment())
            self._paused = None
            metrics.paused.set(0)
            log.info("%d messages pending: resuming consumption", pending)
        else:
            newly_assigned = self.source.assignment() - self._paused
            if newly_assigned:
                self.source.pause(newly_assigned)
                self._paused |= newly_assigned

    # -- rebalance (called by librdkafka inside consume() or close()) -------------------------

    def on_assign(self, partitions: list[Key]) -> None:
        for topic, partition in partitions:
            self.tracker.assign(topic, partition)
        if partitions:
            log.info("assigned %s", _names(partitions))
        if not self._stopping:
            self.status.ready = True
            self.status.reason = "ok"

    def on_revoke(self, partitions: list[Key]) -> None:
        owned = [k for k in partitions if k in self.tracker.partitions]
        if owned and not self._closing:
            log.info("revoking %s: finishing their messages (up to %.0fs)", _names(owned),
                     self.settings.pipeline.rebalance_timeout_s)
            # 1. Send what is buffered, so the revoked partitions' messages get their chance.
            for batch in self.batcher.flush():
                self._send(batch)
            # 2. Wait, bounded, until every message read from them is done.
            deadline = time.monotonic() + self.settings.pipeline.rebalance_timeout_s
            while (any(self.tracker.partitions[k].pending for k in owned) and not self._hurry
                   and self.fatal is None and time.monotonic() < deadline):
                self._drain(wait_s=0.02)
                if self.dead_letters is not None:
                    self.dead_letters.poll(0)
                self.status.beat()
            unfinished = sum(self.tracker.partitions[k].pending for k in owned)
            if unfinished:
                log.warning("%d messages of the revoked partitions did not finish in time; "
                            "their next owner reads them again", unfinished)
        # 3. Commit what is done for them, while they are still ours.
        self.checkpoint.commit(owned, asynchronous=False)
        # 4. Forget them: late completions are ignored, and their senders give up.
        self._release(partitions)

    def on_lost(self, partitions: list[Key]) -> None:
        # Lost, not revoked: another member may own them already, so commit nothing.
        log.warning("lost %s (the group moved on without us); their uncommitted messages "
                    "are read again by the next owner", _names(partitions))
        self._release(partitions)

    def _release(self, partitions: list[Key]) -> None:
        self.tracker.release(partitions)
        self.checkpoint.forget(partitions)
        if self._paused is not None:
            self._paused -= set(partitions)

    # -- shutdown ----------------------------------------------------------------------------

    def _shutdown(self) -> int:
        self.status.ready = False
        self.status.reason = "shutting down"
        grace = self.settings.pipeline.shutdown_grace_s
        deadline = time.monotonic() + grace
        # 1. Stop reading: consume() is not called again.
        # 2. Send what is buffered, unless a fatal error makes sending pointless.
        buffered = self.batcher.flush()
        if self.fatal is None:
            for batch in buffered:
                self._send(batch)
        # 3. Wait, up to the grace, for batches in flight and dead letters to finish.
        while (self.in_flight or (self.dead_letters and self.dead_letters.in_flight)) \
                and not self._hurry and time.monotonic() < deadline:
            self._drain(wait_s=0.05)
            if self.dead_letters is not None:
                self.dead_letters.poll(0)
            self.status.beat()
        # 4. Give up on the rest: it stays uncommitted and is read again after a restart.
        self.stop_sending.set()
        if self.in_flight:
            events = sum(len(b) for b in self.in_flight.values())
            log.warning("%d batches (%d events) were not delivered within the %.0fs grace; they stay "
                        "uncommitted and are delivered after the restart", len(self.in_flight), events, grace)
        # 5. Commit what is done.
        self.checkpoint.commit(asynchronous=False)
        # 6. Leave the group (on_revoke runs once more: it commits nothing new).
        self._closing = True
        self.source.close()
        # 7. Release the rest.
        self.pool.close(timeout_s=1.0)
        if self.client is not None:
            self.client.close()
        if self.dead_letters is not None:
            self.dead_letters.flush(5.0)
        code = self.fatal.exit_code if self.fatal else 0
        log.info("stopped (exit code %d)", code)
        return code

    # -- start-up checks -----------------------------------------------------------------------

    def _check_dead_letter_topic(self) -> None:
        if self.dead_letters is None:
            return
        topic = self.dead_letters.topic
        if self.source.topic_exists(topic) is False:
            log.warning("the dead-letter topic %r does not exist: dead letters fail unless the brokers "
                        "create topics automatically; create it before messages turn out invalid", topic)


def _names(partitions: list[Key]) -> str:
    shown = [f"{t}[{p}]" for t, p in sorted(partitions)[:20]]
    more = len(partitions) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")
