"""The driver: consume, map, batch, send, mark done, commit.

One thread owns all delivery state (offsets, open batches, dead letters): this one. It
reads messages, maps them (mapping/), batches them (batcher.py), sends each full batch's
first request itself without waiting for it (sink/direct.py; the sender pool's threads
take whatever needs a retry), and takes the results back from the completion queue to
mark messages done (offsets.py), so the checkpoint (checkpoint.py) can commit. Invalid
messages go where ``on_invalid`` says (invalid.py); backpressure.py keeps memory bounded.

Rebalance callbacks run on this thread too, inside ``consume()``. On revocation the
revoked partitions get ``rebalance_timeout_s`` to finish; what is done is committed
while they are still ours, the rest is abandoned (the next owner reads it again).

``replay`` (replay.py) is this same loop with three parts of its own: the source (the
dead-letter topic, bounded by its end offsets at the start), the map step (each dead
letter unwrapped into the original message first) and the invalid step; the loop stops
once the replay read everything up to its bound and settled it.

The Kafka source, the sender, the dead-letter queue and the clock can be injected, so
the loop's rebalance and shutdown logic are unit-tested with fakes.
"""

from __future__ import annotations

import logging
import queue
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any, TextIO, cast

from . import metrics
from .backpressure import Backpressure, DestinationBackpressure
from .batcher import Batch, Batcher, Item
from .checkpoint import Checkpoint
from .config.model import DEFAULT_DESTINATION
from .dead_letter import DeadLetterQueue
from .errors import AuthError, DeliveryConfigError, FatalError, InvalidMessage, RegistryRefused, RegistryUnavailable
from .formats import Decoders
from .health import ADDRESS_REFUSED, KEY_REFUSED, READY, REGISTRY_REFUSED, SHUTTING_DOWN, Status
from .invalid import InvalidRouter
from .kafka import Key
from .lag import LagMonitor
from .mapping.mapper import MessageMapper
from .offsets import OffsetTracker, PartitionOffsets
from .registry_wait import RegistryWait
from .replay import Replay
from .sink.destination import Destination, open_destinations, thread_name
from .sink.direct import DirectSender
from .sink.dryrun import PrintingSender
from .sink.pool import Sender, SenderPool, SenderPools
from .sink.sender import BatchResult
from .source import KafkaSource
from .startup import Startup
from .threads import daemon_thread

log = logging.getLogger("connector.pipeline")

CONSUME_BATCH = 500  # messages per consume() call
POLL_S = 0.05  # longest wait in consume(); completions are looked at between calls
DIRECT_POLL_S = 0.002  # the same while requests are open on this thread: answers are read between calls
REFRESH_S = 1.0  # gauges and the probes' view of what is pending
CLOSE_TIMEOUT_S = 10.0  # the final commit and leaving the group, at most (after the grace)
DEAD_LETTER_FLUSH_S = 3.0  # dead letters still on their way at the very end


class Pipeline:
    def __init__(
        self,
        startup: Startup,
        dry_run: bool = False,
        out: TextIO | None = None,
        *,
        source_factory: Callable[..., Any] = KafkaSource,
        sender: Sender | None = None,
        dead_letters: DeadLetterQueue | None = None,
        clock: Callable[[], float] = time.monotonic,
        replay: Replay | None = None,
    ):
        settings = self.settings = startup.settings
        self.dry_run = dry_run
        self.replay = replay
        self.out = out or sys.stdout
        self.clock = clock
        uf, pipe = settings.userflux, settings.pipeline

        self.decoders = Decoders.from_settings(settings.schema_registry, settings.limits)
        self.mapper = MessageMapper(startup.mappings, settings.limits, self.decoders)
        # The map step: a replay's unwraps each dead letter into its original message first.
        self.map_message = self.mapper.map if replay is None else replay.map_step(self.mapper)
        self.tracker = OffsetTracker()
        self.batcher = Batcher(uf.batch_size, uf.linger_ms / 1000, clock=clock)
        # A Queue, not a SimpleQueue: on Python 3.11, a signal handler that outlasts the
        # timeout of SimpleQueue.get(timeout) leaves it waiting for the next put, and a
        # SIGTERM during an outage then never reached the shutdown.
        self.completions: queue.Queue[BatchResult] = queue.Queue()
        self.stop_sending = threading.Event()
        self.status = Status(
            loop_timeout_s=max(60.0, 2 * pipe.rebalance_timeout_s + 10),
            stall_timeout_s=pipe.stall_timeout_s,
            clock=clock,
        )
        # One destination per UserFlux project (sink/destination.py): its client, its gate
        # and its sender threads, none of them shared with another destination.
        self.destinations: dict[str, Destination] = {}
        names = [d.name for d in uf.all_destinations]
        if sender is None and not dry_run:
            self.destinations = open_destinations(uf, self.stop_sending, self.completions, health=self.status)
            pools = {name: destination.pool for name, destination in self.destinations.items()}
        else:
            sender = sender or PrintingSender(self.out)
            workers = 1 if dry_run else uf.max_in_flight
            pools = {name: SenderPool(sender, workers, self.completions, thread_name(name)) for name in names}
        self.pool = SenderPools(pools)
        # The first request of each batch goes out from this thread (sink/direct.py); the
        # pools' threads take the rest: retries, splits, and everything through a proxy.
        self.direct: DirectSender | None = None
        if any(destination.direct for destination in self.destinations.values()):
            self.direct = DirectSender(self.destinations.values(), self.completions, uf.max_in_flight)

        kafka = dict(settings.kafka)
        if replay is not None:
            kafka = replay.consumer_props(kafka)  # the group <group.id>.replay, dry run or not
        elif dry_run:
            # Never join the production group: it would take partitions from the real connector.
            kafka["group.id"] = kafka["group.id"] + ".dry-run"
        self.group = kafka.get("group.id", "")
        self.topics = [replay.plan.topic] if replay is not None else self.mapper.subscription()
        self.checkpoint = Checkpoint(
            None,
            self.tracker,
            pipe.commit_interval_ms / 1000,
            enabled=not dry_run,
            clock=clock,
            on_committed=self._committed,
        )
        self.source = source_factory(kafka, self, on_commit=self.checkpoint.on_commit_result)
        if replay is not None:
            self.source = replay.bound(self.source)
        self.checkpoint.source = self.source
        self.backpressure: Backpressure | DestinationBackpressure
        if len({mapping.destination for mapping in startup.mappings}) > 1:
            # Each destination's pending messages are bounded on its own (backpressure.py).
            self.backpressure = DestinationBackpressure(
                self.source, pipe.max_pending_messages, self.tracker.partitions, self._destination_of, clock=clock
            )
        else:
            self.backpressure = Backpressure(self.source, pipe.max_pending_messages, clock=clock)
        registry = settings.schema_registry
        self.registry_wait = RegistryWait(
            self.source,
            self.status,
            (registry.initial_backoff_ms if registry else 500) / 1000,
            (registry.max_backoff_ms if registry else 30_000) / 1000,
            clock=clock,
        )
        if dead_letters is None and (settings.on_invalid == "dead_letter" or replay is not None) and not dry_run:
            assert settings.dead_letter is not None
            dead_letters = DeadLetterQueue(settings.kafka, settings.dead_letter)
        self.dead_letters = dead_letters
        self.invalid: InvalidRouter
        if replay is not None:
            self.invalid = replay.router_for(
                dead_letters, self._fail, self.status.progress, self.out if dry_run else None
            )
        else:
            self.invalid = InvalidRouter(
                settings.on_invalid, dead_letters, self._fail, self.status.progress, out=self.out if dry_run else None
            )
        # Before the metrics server starts: the first scrape has them at 0.
        every = settings.userflux.all_destinations
        metrics.start_series(
            (d.name for d in every), (d.name for d in every if d.max_events_per_second or d.max_requests_per_second)
        )
        self._start_topic_series(self.mapper.topic_names())
        self.series = metrics.PartitionSeries()
        self.lag: LagMonitor | None = None
        if settings.metrics.enabled and not dry_run and replay is None:
            self.lag = LagMonitor(kafka, self.series, settings.metrics.lag_interval_s)

        self.in_flight: dict[int, Batch] = {}
        self._in_flight_events = 0
        self._next_refresh = 0.0
        self.fatal: FatalError | None = None
        self._stopping = False
        self._hurry = False  # a second signal: skip what is left of the grace
        self._closing = False
        self._exit_now = threading.Event()  # a signal during the wait after a refusal
        self._pending = 0  # messages read and not yet committable, as of the last step
        self.closed_cleanly = True  # False: librdkafka may still hold the process at exit

    # -- running ---------------------------------------------------------------------

    def run(self) -> int:
        """Run until stopped by a signal or a fatal error (a replay: or once it is done);
        return the exit code."""
        topics = self.topics
        uf = self.settings.userflux
        log.info(
            "consumer group %r reading %s%s; %s in batches of up to %d, %d in flight%s",
            self.source_group,
            ", ".join(topics),
            f" up to its end offsets at the start ({self.replay.plan.to_read} dead letters)" if self.replay else "",
            "printing (dry run, nothing committed)" if self.dry_run else f"delivering to {self._where()}",
            uf.batch_size,
            uf.max_in_flight,
            " per destination" if len(uf.all_destinations) > 1 else "",
        )
        self._check_dead_letter_topic()
        self.source.subscribe(topics)
        if self.lag is not None:
            self.lag.start()
        try:
            while not self._stopping:
                self._step()
        except FatalError as exc:
            self._fail(exc)
        except Exception as exc:  # a bug: still commit what is done and leave the group cleanly
            log.exception("internal error in the pipeline loop")
            self._fail(FatalError(f"internal error: {exc!r}"))
        return self._shutdown()

    def _where(self) -> str:
        """The destinations, in words: ``https://...`` alone, or ``web (https://...), mobile (...)``."""
        found = self.settings.userflux.all_destinations
        if len(found) == 1 and found[0].name == DEFAULT_DESTINATION:
            return found[0].base_url
        return ", ".join(f"{d.name} ({d.base_url})" for d in found)

    def _destination_of(self, key: Key) -> str:
        mapping = self.mapper.mapping_for(key[0])
        return mapping.destination if mapping is not None else DEFAULT_DESTINATION

    @property
    def source_group(self) -> str:
        return self.group

    def request_stop(self, signum: int | None = None) -> None:
        """Called from a signal handler: only flags are set here."""
        name = signal.Signals(signum).name if signum else "stop request"
        self._exit_now.set()
        if not self._stopping:
            self._stopping = True
            log.info(
                "%s: stopping; delivering what is in flight (up to %.0fs), then committing",
                name,
                self.settings.pipeline.shutdown_grace_s,
            )
        else:
            self._hurry = True
            log.warning("%s again: skipping the rest of the grace period", name)

    def _step(self) -> None:
        timeout = DIRECT_POLL_S if self.direct is not None and self.direct.active else POLL_S
        due_in = self.batcher.next_due_in()
        if due_in is not None:
            timeout = min(timeout, due_in)
        if self.registry_wait.waiting:
            self._wait_for_registry(timeout)
        elif self.backpressure.consuming:
            # Never read more than fits under max_pending_messages (at least one, so that
            # rebalance callbacks are still served while paused).
            room = self.backpressure.room(self._pending)
            messages = self.source.consume(max(1, min(CONSUME_BATCH, room)), timeout)
            if messages:
                for topic, n in Counter(m.topic() for m in messages).items():
                    metrics.messages_consumed.labels(topic).inc(n)
                self._ingest(messages, self.clock())
            self._drain()
        else:
            self._drain(wait_s=timeout)  # holding: only completions can make room
        for batch in self.batcher.due():
            self._send(batch)
        self._poll_dead_letters()
        if self.replay is not None:
            self.replay.poll(self._admit, self._fail)
        self.checkpoint.maybe_commit()
        self._pending = self.tracker.pending  # nothing changes it until the next step
        if not self.registry_wait.waiting:  # the wait holds every partition paused itself
            self.backpressure.apply(self._pending)
        self.status.beat()
        if self.clock() >= self._next_refresh:
            self._refresh()
        if self.replay is not None and not self._stopping and self.replay.done(self.tracker):
            log.info("replay: every dead letter up to the end offsets at the start is settled")
            self._stopping = True

    def _wait_for_registry(self, timeout: float) -> None:
        """Reading waits for the schema registry (registry_wait.py): try the held messages
        again when the backoff is up; meanwhile serve rebalances, completions and commits."""
        wait = self.registry_wait
        if wait.due():
            self._ingest(wait.take(), self.clock())
            wait.settle(self.backpressure.paused)
            if not wait.waiting:
                return
        # The partitions are paused: consume() only serves rebalance callbacks, unless a fetch
        # was under way; what it returns waits behind the held messages, in order.
        late = self.source.consume(1, min(timeout, max(0.0, wait.retry_at - self.clock())))
        if late:
            wait.add(late)
        self._drain()

    # -- consume, map, batch -------------------------------------------------------------

    def _ingest(self, messages: list[Any], read_at: float) -> None:
        """The per-message path: track, map, batch. Kept flat on purpose: it runs for
        every message, and every call and lookup saved here shows in CPU per event."""
        get_offsets, map_message, add, send = self.tracker.get, self.map_message, self.batcher.add, self._send
        last_key: Key | None = None
        offsets = cast(PartitionOffsets, None)  # set by the first message: consume() returns runs of one partition
        for message in messages:
            key = (message.topic(), message.partition())
            if key != last_key:  # consume() returns runs of one partition
                offsets, last_key = get_offsets(*key), key
            offset = message.offset()
            if not offsets.track(offset, read_at):
                # At or below an offset already read in this assignment: the first copy is
                # being handled. librdkafka does not rewind on its own, so say it loudly.
                self.invalid.warn("ignoring %s[%d] offset %d: already read in this assignment", key[0], key[1], offset)
                continue
            try:
                mapping, event = map_message(message)
            except InvalidMessage as exc:
                self.invalid.route(message, offsets, exc.reason, exc.stage)
                continue
            except RegistryUnavailable as exc:
                # Nothing is wrong with the message: it and the rest wait, as if not read yet.
                offsets.untrack(offset)
                self.registry_wait.hold(messages[next(i for i, m in enumerate(messages) if m is message) :], exc.reason)
                return
            if event is None:
                metrics.messages_filtered.labels(key[0]).inc()
                offsets.done(offset)
                continue
            full = add(Item(event, message, offsets, offset), mapping.batch_key)
            if full is not None:
                send(full)

    def _admit(self, message: Any, offsets: PartitionOffsets) -> None:
        """_ingest's map and batch, for one message tracked already: a replayed dead letter
        whose original had to be read again at its source offset first."""
        offset = message.offset()
        try:
            mapping, event = self.map_message(message)
        except InvalidMessage as exc:
            self.invalid.route(message, offsets, exc.reason, exc.stage)
            return
        except RegistryUnavailable as exc:
            # Tracked already, amid its partition: it stays pending (nothing is committed
            # past it) and the replay tries it again after a backoff.
            assert self.replay is not None
            self.replay.later(message, offsets, exc.reason)
            return
        if event is None:
            metrics.messages_filtered.labels(offsets.topic).inc()
            offsets.done(offset)
            return
        full = self.batcher.add(Item(event, message, offsets, offset), mapping.batch_key)
        if full is not None:
            self._send(full)

    def _send(self, batch: Batch) -> None:
        self.in_flight[batch.id] = batch
        self._in_flight_events += len(batch)
        if self.direct is not None:
            self.direct.submit(batch)
        else:
            self.pool.submit(batch)

    # -- mark done -------------------------------------------------------------------------

    def _drain(self, wait_s: float = 0.0) -> None:
        """Take finished batches off the completion queue; wait up to wait_s for the first."""
        direct = self.direct
        if direct is not None and direct.active:
            if wait_s > 0 and direct.open and self.completions.empty():
                # Wait on the open requests' sockets; in slices while the pool's threads work too.
                direct.pump(min(wait_s, DIRECT_POLL_S) if self.pool.busy else wait_s)
                wait_s = 0.0
            else:
                direct.pump(0.0)
                wait_s = min(wait_s, DIRECT_POLL_S)  # batches wait for room or a connection
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
        if self.in_flight.pop(result.batch.id, None) is not None:
            self._in_flight_events -= len(result.batch)
        if result.delivered:
            at_ms = result.delivered_at * 1000
            latencies = []
            topics: dict[str, int] = {}
            for item in result.delivered:
                item.offsets.done(item.offset)
                kind, ms = item.message.timestamp()
                if kind:  # 0: the message has no timestamp
                    latencies.append(max(0.0, at_ms - ms) / 1000)
                topic = item.offsets.topic
                topics[topic] = topics.get(topic, 0) + 1
            metrics.observe_many(metrics.end_to_end_latency, latencies)
            destination = result.batch.destination
            for topic, n in topics.items():
                metrics.events_delivered.labels(topic, destination).inc(n)
            metrics.last_delivery.set(result.delivered_at)
            self.status.progress()
            if self.replay is not None:
                self.replay.delivered(len(result.delivered))
        for item, reason in result.refused:
            if item.offsets.owned:  # a revoked partition's next owner decides again
                self.invalid.route(item.message, item.offsets, reason, "deliver")
        if result.failure is not None:
            self._fail(result.failure)

    def _poll_dead_letters(self) -> None:
        if self.dead_letters is not None:
            self.dead_letters.poll(0)  # delivery reports mark their messages done, here
            if self.dead_letters.fatal is not None:
                self._fail(self.dead_letters.fatal)

    def _fail(self, error: FatalError) -> None:
        if self.fatal is None:
            self.fatal = error
            log.error("%s", error)
            if isinstance(error, (AuthError, DeliveryConfigError)):
                metrics.key_refused.set(1)
                self.status.set_state(
                    KEY_REFUSED if isinstance(error, AuthError) else ADDRESS_REFUSED, str(error)[:300]
                )
            elif isinstance(error, RegistryRefused):
                self.status.set_state(REGISTRY_REFUSED, str(error)[:300])
        self._stopping = True

    def _committed(self, key: Key, position: int) -> None:
        """The broker acknowledged a commit (called by the checkpoint, on this thread)."""
        self.status.progress()
        if self.lag is not None:
            self.lag.committed(key, position)

    # -- rebalance (called by librdkafka inside consume() or close()) -------------------------

    def _start_topic_series(self, topics: Iterable[str]) -> None:
        """The topics' counters at 0, before their first message: see metrics.start_topic_series."""
        mapped = [(topic, m.destination) for topic in topics if (m := self.mapper.mapping_for(topic)) is not None]
        metrics.start_topic_series(mapped, self.invalid.action, self.dead_letters is not None)

    def on_assign(self, partitions: list[Key]) -> None:
        self._start_topic_series({topic for topic, _ in partitions})  # topics a pattern matched, too
        for topic, partition in partitions:
            self.tracker.assign(topic, partition)
        self.backpressure.assigned(partitions)
        self.registry_wait.assigned(partitions)
        self.series.add(partitions)
        if partitions:
            metrics.rebalances.labels("assign").inc()
            log.info("assigned %s", _names(partitions))
        self._count_assigned()
        if not self._stopping:
            self.status.set_state(READY)

    def on_revoke(self, partitions: list[Key]) -> None:
        owned = [k for k in partitions if k in self.tracker.partitions]
        if partitions:
            metrics.rebalances.labels("revoke").inc()
        if owned and not self._closing:
            log.info(
                "revoking %s: finishing their messages (up to %.0fs)",
                _names(owned),
                self.settings.pipeline.rebalance_timeout_s,
            )
            # 1. Send what is buffered, so the revoked partitions' messages get their chance.
            for batch in self.batcher.flush():
                self._send(batch)
            # 2. Wait, bounded, until every message read from them is done.
            deadline = self.clock() + self.settings.pipeline.rebalance_timeout_s
            while (
                any(self.tracker.partitions[k].pending for k in owned)
                and not self._hurry
                and self.fatal is None
                and self.clock() < deadline
            ):
                self._drain(wait_s=0.02)
                self._poll_dead_letters()
                self.status.beat()
            unfinished = sum(self.tracker.partitions[k].pending for k in owned)
            if unfinished:
                log.warning(
                    "%d messages of the revoked partitions did not finish in time; their next owner reads them again",
                    unfinished,
                )
        # 3. Commit what is done for them, while they are still ours.
        self.checkpoint.commit(owned, asynchronous=False)
        # 4. Forget them: late completions are ignored, and their senders give up.
        self._release(partitions)
        if self.replay is not None and owned and not self._closing:
            self._fail(self.replay.lost(owned))  # a replay reads its whole topic alone

    def on_lost(self, partitions: list[Key]) -> None:
        # Lost, not revoked: another member may own them already, so commit nothing.
        metrics.rebalances.labels("lost").inc()
        log.warning(
            "lost %s (the group moved on without us); their uncommitted messages are read again by the next owner",
            _names(partitions),
        )
        self._release(partitions)
        if self.replay is not None and partitions and not self._closing:
            self._fail(self.replay.lost(partitions))

    def _release(self, partitions: list[Key]) -> None:
        if partitions and log.isEnabledFor(logging.DEBUG):
            log.debug("released %s", ", ".join(f"{t}[{p}]" for t, p in sorted(partitions)))
        self.tracker.release(partitions)
        self.checkpoint.forget(partitions)
        # Their series go now: a partition we do not own has no lag of ours to report.
        self.series.remove(partitions)
        if self.lag is not None:
            self.lag.forget(partitions)
        self.backpressure.release(partitions)
        self.registry_wait.release(partitions)
        self._count_assigned()

    def _count_assigned(self) -> None:
        self.status.assigned = len(self.tracker.partitions)
        metrics.assigned_partitions.set(self.status.assigned)

    # -- gauges and probes -------------------------------------------------------------------

    def _refresh(self) -> None:
        """Once a second: what is held, and how long the oldest pending message has waited."""
        now = self.clock()
        self._next_refresh = now + REFRESH_S
        oldest: float | None = None
        for key, offsets in self.tracker.partitions.items():
            read_at = offsets.oldest_read_at()
            self.series.set(metrics.oldest_pending_age, key, 0.0 if read_at is None else now - read_at)
            if read_at is not None and (oldest is None or read_at < oldest):
                oldest = read_at
        self.status.set_pending(self._pending, oldest)
        metrics.pending_messages.set(self._pending)
        metrics.buffered_events.set(self.batcher.buffered)
        metrics.in_flight_events.set(self._in_flight_events)
        metrics.in_flight_batches.set(len(self.in_flight))

    # -- shutdown ----------------------------------------------------------------------------

    def _shutdown(self) -> int:
        self.status.set_state(SHUTTING_DOWN, "delivering what is in flight, then committing")
        grace = self.settings.pipeline.shutdown_grace_s
        deadline = self.clock() + grace
        # 1. Stop reading: consume() is not called again.
        # 2. Send what is buffered, unless a fatal error makes sending pointless.
        buffered = self.batcher.flush()
        if self.fatal is None:
            for batch in buffered:
                self._send(batch)
        # 3. Wait, up to the grace, for batches in flight and dead letters to finish (a
        #    batch of revoked partitions only is no longer ours to wait for).
        while (
            (self._owned_in_flight() or (self.dead_letters and self.dead_letters.in_flight))
            and not self._hurry
            and self.clock() < deadline
        ):
            self._drain(wait_s=0.05)
            self._poll_dead_letters()
            self.status.beat()
        # 4. Give up on the rest: it stays uncommitted and is read again after a restart.
        self.stop_sending.set()
        if self.direct is not None:
            self.direct.close()
        if self.in_flight:
            events = sum(len(b) for b in self.in_flight.values())
            log.warning(
                "%d batches (%d events) were not delivered within the %gs grace; they stay "
                "uncommitted and are delivered after the restart",
                len(self.in_flight),
                events,
                grace,
            )
        # 5. Commit what is done, and 6. leave the group (on_revoke runs once more: it
        #    commits nothing new). Bounded: with the brokers away librdkafka waits for them
        #    without end, and a process that does not stop is killed without a word. With
        #    the rest below, the whole stop takes at most the grace + 14 s.
        self._closing = True
        self.closed_cleanly = self._bounded(CLOSE_TIMEOUT_S, self._commit_and_leave)
        if not self.closed_cleanly:
            log.warning(
                "Kafka did not answer within %gs: stopping without a final commit or a clean leave; what "
                "was not committed is delivered again after the restart",
                CLOSE_TIMEOUT_S,
            )
        # 7. Release the rest.
        if self.replay is not None:
            self.replay.close()
        self.pool.close(timeout_s=1.0)
        for destination in self.destinations.values():
            destination.client.close()
        if self.dead_letters is not None:
            self.dead_letters.flush(DEAD_LETTER_FLUSH_S)
        code = self.fatal.exit_code if self.fatal else 0
        # 8. Refused by UserFlux: stay up a while (not ready) so the refusal is scraped and
        #    seen, and a restart loop does not hammer UserFlux; a signal ends the wait.
        if isinstance(self.fatal, (AuthError, DeliveryConfigError, RegistryRefused)) and self.replay is None:
            self._linger(self.settings.pipeline.refused_exit_delay_s)
        if self.replay is None:
            log.info("stopped (exit code %d)", code)
        else:  # the replay's own exit code is told with its summary
            log.info("stopped" + (f" ({type(self.fatal).__name__}, exit code {code})" if self.fatal else ""))
        return code

    def _commit_and_leave(self) -> None:
        self.checkpoint.commit(asynchronous=False)
        self.source.close()
        if self.lag is not None:
            self.lag.stop()

    @staticmethod
    def _bounded(seconds: float, work: Callable[[], None]) -> bool:
        """Run ``work`` on a thread of its own; False if it did not finish in ``seconds``."""
        failure: list[BaseException] = []

        def run() -> None:
            try:
                work()
            except BaseException as exc:  # reported below, on this thread
                failure.append(exc)

        thread = daemon_thread(run, "kafka-close")
        thread.start()
        thread.join(seconds)
        if failure:
            log.warning("leaving the consumer group failed: %s", failure[0])
        return not thread.is_alive()

    def _owned_in_flight(self) -> bool:
        return any(item.offsets.owned for batch in self.in_flight.values() for item in batch.items)

    def _linger(self, seconds: float) -> None:
        if seconds <= 0 or self._exit_now.is_set():
            return
        log.info("exiting in %.0fs (refused; /readyz says why until then)", seconds)
        deadline = time.monotonic() + seconds
        while not self._exit_now.wait(min(1.0, max(0.0, deadline - time.monotonic()))):
            self.status.beat()
            if time.monotonic() >= deadline:
                return

    # -- start-up checks -----------------------------------------------------------------------

    def _check_dead_letter_topic(self) -> None:
        if self.dead_letters is None:
            return
        topic = self.dead_letters.topic
        if self.source.topic_exists(topic) is False:
            log.warning(
                "the dead-letter topic %r does not exist: dead letters fail unless the brokers "
                "create topics automatically; create it before messages turn out invalid",
                topic,
            )


def _names(partitions: list[Key]) -> str:
    shown = [f"{t}[{p}]" for t, p in sorted(partitions)[:20]]
    more = len(partitions) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")
