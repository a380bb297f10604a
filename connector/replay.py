"""``replay``: dead letters delivered again, through the same pipeline as ``run``.

The Pipeline runs as for ``run`` with three of its parts given by this module
(pipeline.py, ``replay=``):

* the source, ``BoundedSource``: the dead-letter topic, read in the consumer group
  ``<group.id>.replay`` up to the end offsets it had when the replay started
  (``ReplayPlan``). A dead letter at or past them is never handed on, so it is never
  tracked or committed past, and the replay never reads what it writes itself;
* the map step, ``Replay.map``: each dead letter unwrapped (``dead_letter.unwrap``) into
  the original message, with its original key, headers and timestamp, which the mapping
  of its original topic maps exactly as ``run`` would;
* the invalid step, ``ReplayRouter``: a dead letter that is still invalid is written to
  the dead-letter topic again, with its new reason and a replay count, or reported once
  past ``--max-replays``; one the filters leave out is written again as it is, for a
  later replay; one whose value was dropped for size is read at its source offset
  (refetch.py) and goes on from there, or is reported if the source no longer has it.

Everything else is the pipeline's own: batches, the sink (retries, Retry-After,
splitting, the gates), rebalances, backpressure, the commit. A dead letter's offset is
done, so the commit may pass it, only once its event was delivered, its mapping's
``where`` filtered it, its dead letter was written again and acknowledged, or it was
reported: an interrupted replay resumes where its group committed, a finished one does
not repeat, and nothing is lost on any fault.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TextIO

from .dead_letter import HEADER_REPLAYS, DeadLetterQueue, OriginalMessage, unwrap
from .errors import ConfigError, FatalError, GroupBusy, InvalidMessage
from .group_offsets import GroupAdmin, format_instant
from .invalid import InvalidRouter
from .kafka import Key
from .logs import RateLimitedLog
from .mapping.mapper import MessageMapper
from .offsets import OffsetTracker, PartitionOffsets
from .refetch import SourceFetcher

log = logging.getLogger("connector.replay")

STAGES = ("deserialize", "map", "deliver")
MAX_REASONS = 50  # distinct reasons in a summary; the rest are counted together
MAX_LISTED = 100  # not-replayable dead letters listed one by one in a summary

# What a dead letter turned out to be (Letter.verdict), for the invalid step.
MAP, LEFT_OUT, FOREIGN, REFETCH, FETCHED = "map", "left_out", "foreign", "refetch", "fetched"

# Why a dead letter is reported rather than written again (the summary's groups).
PAST_MAX = "still invalid after --max-replays replays"
GONE = "its value was dropped for size, and the source no longer holds the original"
NOT_OURS = "not a dead letter of the connector (no readable userflux.source.* headers)"


# -- what is replayed ---------------------------------------------------------------------


@dataclass(frozen=True)
class Selection:
    """The filters: which dead letters this replay takes on. The others are kept."""

    stages: frozenset[str] = frozenset()
    topics: frozenset[str] = frozenset()
    since_ms: int | None = None  # the dead letter's timestamp, at or after
    until_ms: int | None = None  # ... and before

    def __post_init__(self) -> None:
        unknown = sorted(self.stages - set(STAGES))
        if unknown:
            raise ConfigError(f"--stage {unknown[0]}: expected one of {', '.join(STAGES)}")
        if self.since_ms is not None and self.until_ms is not None and self.since_ms >= self.until_ms:
            raise ConfigError("--since must be before --until")

    @property
    def everything(self) -> bool:
        return not (self.stages or self.topics or self.since_ms is not None or self.until_ms is not None)

    def selects(self, letter: Any, original: OriginalMessage | None) -> bool:
        if self.stages and (original is None or original.stage not in self.stages):
            return False
        if self.topics and (original is None or original.topic() not in self.topics):
            return False
        if self.since_ms is not None or self.until_ms is not None:
            kind, ms = letter.timestamp()
            if not kind:
                return False
            if self.since_ms is not None and ms < self.since_ms:
                return False
            if self.until_ms is not None and ms >= self.until_ms:
                return False
        return True

    def as_dict(self) -> dict[str, Any]:
        return {
            "stage": sorted(self.stages),
            "source_topic": sorted(self.topics),
            "since": None if self.since_ms is None else format_instant(self.since_ms),
            "until": None if self.until_ms is None else format_instant(self.until_ms),
        }


@dataclass(frozen=True)
class ReplayPlan:
    """Where the replay group starts on each partition of the dead-letter topic, and the
    end offsets it stops at: those of the moment it started."""

    topic: str
    group: str
    start: dict[Key, int]
    end: dict[Key, int]

    @property
    def work(self) -> list[Key]:
        """The partitions with dead letters to read."""
        return sorted(k for k, end in self.end.items() if self.start[k] < end)

    @property
    def to_read(self) -> int:
        return sum(self.end[k] - self.start[k] for k in self.work)

    @classmethod
    def from_cluster(cls, admin: GroupAdmin, topic: str, group: str) -> ReplayPlan:
        partitions = admin.topics().get(topic)
        if partitions is None:
            raise ConfigError(f"dead_letter.topic: {topic!r} does not exist on the cluster: there is nothing to replay")
        positions = admin.positions(group, [(topic, p) for p in range(partitions)])
        start, end = {}, {}
        for p in positions:
            # Never committed, or the committed offset is gone (retention) or past the end
            # (the topic was made anew): the replay group starts at the earliest.
            committed = p.committed
            start[p.key] = committed if committed is not None and p.earliest <= committed <= p.end else p.earliest
            end[p.key] = p.end
        return cls(topic, group, start, end)


class Letter:
    """A dead letter as the pipeline tracks it: its own coordinates (the dead-letter
    topic's partition and offset, the ones committed) and accessors, and the original
    message inside it, once unwrapped."""

    __slots__ = ("raw", "original", "verdict")

    def __init__(self, raw: Any):
        self.raw = raw
        self.original: OriginalMessage | None = None
        self.verdict = MAP

    def topic(self) -> str:
        return self.raw.topic()

    def partition(self) -> int:
        return self.raw.partition()

    def offset(self) -> int:
        return self.raw.offset()

    def key(self) -> Any:
        return self.raw.key()

    def value(self) -> Any:
        return self.raw.value()

    def headers(self) -> Any:
        return self.raw.headers()

    def timestamp(self) -> tuple[int, int]:
        return self.raw.timestamp()

    def where(self) -> dict[str, Any]:
        return {"topic": self.raw.topic(), "partition": self.raw.partition(), "offset": self.raw.offset()}


class Diverted(InvalidMessage):
    """Not for the mapping: the invalid step decides by the letter's verdict."""

    def __init__(self, verdict: str):
        super().__init__(verdict, "replay")


class BoundedSource:
    """The dead-letter topic's consumer (source.py's KafkaSource, or a test's fake),
    bounded by the plan's end offsets: a dead letter at or past its partition's end is
    dropped here, before the pipeline tracks it, and a partition read to its end is
    paused and stays paused."""

    def __init__(self, inner: Any, plan: ReplayPlan):
        self.inner = inner
        self.end = plan.end
        work = set(plan.work)
        self.reached: set[Key] = {k for k in plan.end if k not in work}  # read to the end (or nothing to read)
        if hasattr(inner, "on_eof"):
            inner.on_eof = self._eof

    def subscribe(self, topics: list[str]) -> None:
        self.inner.subscribe(topics)

    def consume(self, max_messages: int, timeout_s: float) -> list[Any]:
        messages = self.inner.consume(max_messages, timeout_s)
        out, end, reached, now_reached = [], self.end, self.reached, []
        for message in messages:
            key = (message.topic(), message.partition())
            bound = end.get(key, 0)  # a partition made since the start holds nothing of this replay
            offset = message.offset()
            if offset >= bound - 1:
                if key not in reached:
                    reached.add(key)
                    now_reached.append(key)
                if offset >= bound:
                    continue
            out.append(Letter(message))
        if now_reached:
            self.inner.pause(now_reached)
        return out

    def _eof(self, topic: str, partition: int, offset: int) -> None:
        """The end of a partition: reached if it is at or past the bound (the bound's last
        offsets may hold no message: a transaction marker, compaction)."""
        key = (topic, partition)
        if key not in self.reached and offset >= self.end.get(key, 0):
            self.reached.add(key)
            self.inner.pause([key])

    def resume(self, keys: Iterable[Key]) -> None:
        keys = set(keys)
        self.inner.resume(keys - self.reached)
        if keys & self.reached:
            self.inner.pause(keys & self.reached)

    def pause(self, keys: Iterable[Key]) -> None:
        self.inner.pause(keys)

    def assignment(self) -> set[Key]:
        return self.inner.assignment()

    def commit(self, positions: list[tuple[str, int, int]], asynchronous: bool) -> bool:
        return self.inner.commit(positions, asynchronous)

    def topic_exists(self, topic: str, *args: Any) -> bool | None:
        return self.inner.topic_exists(topic, *args)

    def close(self) -> None:
        self.inner.close()


# -- the account ------------------------------------------------------------------------------


@dataclass
class Account:
    """What became of the dead letters, counted as each is settled."""

    read: int = 0
    delivered: int = 0
    filtered: int = 0  # by the mapping's where:
    kept: int = 0  # left out by the filters, written again as they were
    invalid: Counter[tuple[str, str]] = field(default_factory=Counter)  # (stage, reason)
    reported: Counter[str] = field(default_factory=Counter)  # by why
    listed: list[dict[str, Any]] = field(default_factory=list)  # the first reported ones

    def still_invalid(self, stage: str, reason: str) -> None:
        key = (stage, reason)
        if key not in self.invalid and len(self.invalid) >= MAX_REASONS:
            key = (stage, "(other reasons)")
        self.invalid[key] += 1

    def report(self, letter: Letter, why: str, detail: str) -> None:
        self.reported[why] += 1
        if len(self.listed) < MAX_LISTED:
            original = letter.original
            self.listed.append(
                {
                    "dead_letter": letter.where(),
                    "source": None
                    if original is None
                    else {"topic": original.topic(), "partition": original.partition(), "offset": original.offset()},
                    "why": why,
                    "detail": detail,
                }
            )

    @property
    def left(self) -> int:
        return sum(self.invalid.values()) + sum(self.reported.values())


# -- the invalid step -------------------------------------------------------------------------


class ReplayRouter(InvalidRouter):
    """Where a dead letter goes that is not delivered: decided by its verdict."""

    def __init__(
        self,
        replay: Replay,
        dead_letters: DeadLetterQueue | None,
        fail: Callable[[FatalError], None],
        progress: Callable[[], None],
        out: TextIO | None,
    ):
        super().__init__("dead_letter", dead_letters, fail, progress)
        self.replay = replay
        self.account = replay.account
        self.printing = out  # a dry run prints what it would do, and writes nothing
        self._reports = RateLimitedLog(log)

    def route(self, message: Any, offsets: PartitionOffsets, reason: str, stage: str) -> None:
        letter: Letter = message
        verdict, offset = letter.verdict, letter.offset()
        if verdict == LEFT_OUT:
            self._keep(letter, offsets)
        elif verdict == FOREIGN:
            names = sorted({name for name, _ in letter.headers() or []})
            self._report(letter, offsets, NOT_OURS, f"its headers: {', '.join(names[:20]) or 'none'}")
        elif verdict == REFETCH:
            self.replay.refetch(letter, offsets)
        else:
            original = letter.original
            assert original is not None
            count = original.replays + 1
            if count > self.replay.max_replays:
                self._report(letter, offsets, PAST_MAX, f"replayed {original.replays} times; now {stage}: {reason}")
            elif self.printing is not None:
                self._print({"invalid": reason, "stage": stage, **_source(original), "replays": count}, letter)
                self.account.still_invalid(stage, reason)
                offsets.done(offset)
            else:
                self._log.log(
                    logging.WARNING,
                    "still invalid: dead letter %s[%d] offset %d (%s[%d] offset %d), %s: %s; written again (replay %d)",
                    letter.topic(),
                    letter.partition(),
                    offset,
                    original.topic(),
                    original.partition(),
                    original.offset(),
                    stage,
                    reason,
                    count,
                )
                self.dead_letter(
                    original,
                    offsets,
                    offset,
                    reason,
                    stage,
                    extra=[(HEADER_REPLAYS, str(count).encode("ascii"))],
                    then=lambda: self.account.still_invalid(stage, reason),
                )

    def _keep(self, letter: Letter, offsets: PartitionOffsets) -> None:
        """Left out by the filters: written again as it is, so a later replay finds it."""
        offset = letter.offset()
        if self.printing is not None:
            self._print({"kept": "left out by the filters"}, letter)
            self.account.kept += 1
            offsets.done(offset)
            return
        assert self.dead_letters is not None

        def done(error: Any) -> None:
            if error is None:
                self.account.kept += 1
                offsets.done(offset)
                self.progress()
            else:
                self.fail(error)

        self.dead_letters.resend(letter, done)

    def _report(self, letter: Letter, offsets: PartitionOffsets, why: str, detail: str) -> None:
        if self.printing is not None:
            self._print({"not_replayable": why, "detail": detail}, letter)
        else:
            self._reports.log(
                logging.WARNING,
                "not replayable: dead letter %s[%d] offset %d: %s (%s); reported, not written again",
                letter.topic(),
                letter.partition(),
                letter.offset(),
                why,
                detail,
            )
        self.account.report(letter, why, detail)
        offsets.done(letter.offset())

    def gone(self, letter: Letter, offsets: PartitionOffsets, detail: str) -> None:
        self._report(letter, offsets, GONE, detail)

    def _print(self, line: dict[str, Any], letter: Letter) -> None:
        assert self.printing is not None
        self.printing.write(json.dumps({**line, "dead_letter": letter.where()}, ensure_ascii=False) + "\n")
        self.printing.flush()


def _source(original: OriginalMessage) -> dict[str, Any]:
    return {"topic": original.topic(), "partition": original.partition(), "offset": original.offset()}


# -- the replay -------------------------------------------------------------------------------


class Replay:
    """One replay: its plan and filters, the steps it gives the pipeline, its account."""

    LATER_S = (1.0, 30.0)  # an original waiting for the schema registry: the first and the longest wait

    def __init__(
        self,
        plan: ReplayPlan,
        selection: Selection,
        max_replays: int,
        dry_run: bool = False,
        fetcher_factory: Callable[[dict[str, str]], Any] = SourceFetcher,
    ):
        self.plan = plan
        self.selection = selection
        self.max_replays = max_replays
        self.dry_run = dry_run
        self.account = Account()
        self.source: BoundedSource | None = None
        self.router: ReplayRouter | None = None
        self.mapper: MessageMapper | None = None
        self._fetcher_factory = fetcher_factory
        self._fetcher: Any = None
        self._later: list[tuple[float, Letter, PartitionOffsets]] = []  # (when, ...): the registry was away
        self._later_attempts = 0
        self._kafka: dict[str, str] = {}
        self.finished = not plan.work

    # -- what the pipeline takes -------------------------------------------------------

    def consumer_props(self, kafka: dict[str, str]) -> dict[str, str]:
        """The replay group's consumer: its own group, from the earliest dead letter when
        it never committed, told when a partition is read to its end; never a static
        member (a pod's id would keep the group busy after the replay ends)."""
        props = {k: v for k, v in kafka.items() if k != "group.instance.id"}
        props["group.id"] = self.plan.group
        props["auto.offset.reset"] = "earliest"
        props["enable.partition.eof"] = "true"
        if "client.id" in props:
            props["client.id"] += "-replay"
        self._kafka = dict(kafka)
        return props

    def bound(self, source: Any) -> BoundedSource:
        self.source = BoundedSource(source, self.plan)
        return self.source

    def map_step(self, mapper: MessageMapper) -> Callable[[Any], tuple[Any, dict | None]]:
        self.mapper = mapper
        return self.map

    def router_for(
        self,
        dead_letters: DeadLetterQueue | None,
        fail: Callable[[FatalError], None],
        progress: Callable[[], None],
        out: TextIO | None,
    ) -> ReplayRouter:
        self.router = ReplayRouter(self, dead_letters, fail, progress, out)
        return self.router

    # -- the map step ---------------------------------------------------------------------

    def map(self, letter: Letter) -> tuple[Any, dict | None]:
        """The original message inside the dead letter, mapped by its topic's mapping;
        Diverted when it is not for the mapping (the invalid step decides)."""
        if letter.verdict == FETCHED:  # read again at its source offset
            return self._map(letter)
        if letter.original is None:  # not a second try (held while the schema registry was away)
            self.account.read += 1
        original = unwrap(letter.raw)
        letter.original = original
        if not self.selection.selects(letter, original):
            letter.verdict = LEFT_OUT
            raise Diverted(LEFT_OUT)
        if original is None:
            letter.verdict = FOREIGN
            raise Diverted(FOREIGN)
        if original.dropped is not None:
            letter.verdict = REFETCH
            raise Diverted(REFETCH)
        return self._map(letter)

    def _map(self, letter: Letter) -> tuple[Any, dict | None]:
        original = letter.original
        mapper = self.mapper
        assert original is not None and mapper is not None
        # Which mapping: the first that takes the original topic now (after the fix).
        if mapper.mapping_for(original.topic()) is None:
            raise InvalidMessage(f"no mapping takes topic {original.topic()!r} now", "map")
        mapping, event = mapper.map(original)
        if event is None:
            self.account.filtered += 1
        return mapping, event

    # -- dead letters whose value was dropped for size ------------------------------------

    def refetch(self, letter: Letter, offsets: PartitionOffsets) -> None:
        original = letter.original
        assert original is not None
        if self._fetcher is None:
            self._fetcher = self._fetcher_factory(self._kafka)
        self._fetcher.submit((letter, offsets), original.topic(), original.partition(), original.offset())

    def later(self, letter: Letter, offsets: PartitionOffsets, reason: str) -> None:
        """An original read again at its source could not be mapped: the schema registry
        did not answer. It stays tracked (nothing is committed past it); tried again after a
        backoff that doubles from 1 s to 30 s (``LATER_S``)."""
        self._later_attempts += 1
        first, longest = self.LATER_S
        delay = min(longest, first * 2.0 ** min(self._later_attempts - 1, 10))
        log.warning("%s; dead letter %s[%d] offset %d tried again in %.1fs", reason, letter.topic(),
                    letter.partition(), letter.offset(), delay)  # fmt: skip
        self._later.append((time.monotonic() + delay, letter, offsets))

    def poll(self, admit: Callable[[Any, PartitionOffsets], None], fail: Callable[[FatalError], None]) -> None:
        """Take back the originals read again: each goes on to the mapping (``admit``), or
        is reported when the source no longer holds it."""
        if self._later and self._later[0][0] <= time.monotonic():
            due, now = [], time.monotonic()
            while self._later and self._later[0][0] <= now:
                due.append(self._later.pop(0))
            for _, letter, offsets in due:
                if offsets.owned:
                    admit(letter, offsets)
            if not self._later:
                self._later_attempts = 0
        if self._fetcher is None or not self._fetcher.pending:
            return
        for fetched in self._fetcher.results():
            letter, offsets = fetched.token
            if not offsets.owned:
                continue  # revoked meanwhile: its next reader decides
            if fetched.failure is not None:
                fail(fetched.failure)
            elif fetched.gone is not None:
                assert self.router is not None
                self.router.gone(letter, offsets, fetched.gone)
            else:
                assert letter.original is not None
                letter.original = letter.original.read_again(fetched.message)
                letter.verdict = FETCHED
                admit(letter, offsets)

    # -- progress and the end -------------------------------------------------------------

    def delivered(self, count: int) -> None:
        self.account.delivered += count

    def done(self, tracker: OffsetTracker) -> bool:
        """Whether every partition was read to its end and every dead letter read settled."""
        if self.finished:
            return True
        source = self.source
        assert source is not None
        for key in self.plan.work:
            if key not in source.reached:
                return False
            offsets = tracker.partitions.get(key)
            if offsets is None or offsets.pending:
                return False
        self.finished = True
        return True

    def lost(self, partitions: list[Key]) -> GroupBusy:
        shown = ", ".join(f"{t}[{p}]" for t, p in sorted(partitions)[:10])
        return GroupBusy(
            f"the replay lost {shown} to another member of its group {self.plan.group!r} (a second replay, or "
            "this one was too slow to answer the group): stopping; what was done is committed, and running "
            "replay again resumes there"
        )

    def close(self) -> None:
        if self._fetcher is not None:
            self._fetcher.close()

    def exit_code(self) -> int:
        """0: read to the end, everything delivered (or filtered by its mapping's where);
        6: read to the end, but dead letters were left (still invalid, or not replayable);
        7: stopped before the end."""
        if not self.finished:
            return 7
        return 6 if self.account.left else 0

    # -- the summary ----------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        a = self.account
        return {
            "dead_letter_topic": self.plan.topic,
            "group": self.plan.group,
            "dry_run": self.dry_run,
            "finished": self.finished,
            "filters": self.selection.as_dict(),
            "max_replays": self.max_replays,
            "to_read": self.plan.to_read,
            "read": a.read,
            "delivered": a.delivered,
            "filtered": a.filtered,
            "still_invalid": {
                "total": sum(a.invalid.values()),
                "by_reason": [
                    {"stage": stage, "reason": reason, "count": n} for (stage, reason), n in a.invalid.most_common()
                ],
            },
            "not_replayable": {
                "total": sum(a.reported.values()),
                "by_reason": [{"reason": why, "count": n} for why, n in a.reported.most_common()],
                "dead_letters": a.listed,
            },
            "kept": a.kept,
            "left": a.left,
            "exit_code": self.exit_code(),
        }

    def render(self, output: str) -> str:
        data = self.summary()
        if output == "json":
            return json.dumps(data, ensure_ascii=False)
        would = "would be " if self.dry_run else ""
        topic = self.plan.topic
        state = "read to the end" if self.finished else "stopped before the end: run it again to resume"
        lines = [
            f"replay{' (dry run: nothing sent, written or committed)' if self.dry_run else ''} of {topic} "
            f"in group {self.plan.group}: {state}"
        ]

        def row(label: str, text: str) -> None:
            lines.append(f"  {label:<20}{text}")

        row("read", f"{data['read']} of {data['to_read']} dead letters (up to the end offsets at the start)")
        row(f"{would}delivered", str(data["delivered"]))
        if data["filtered"]:
            row("filtered", f"{data['filtered']} (by their mapping's where)")
        invalid = data["still_invalid"]
        row("still invalid", f"{invalid['total']}" + (f", {would}written to {topic} again" if invalid["total"] else ""))
        for reason in invalid["by_reason"]:
            lines.append(f"    {reason['count']:>6}  {reason['stage']}: {reason['reason']}")
        reported = data["not_replayable"]
        row(
            "not replayable",
            f"{reported['total']}" + (f", {would}reported, not written again" if reported["total"] else ""),
        )
        for reason in reported["by_reason"]:
            lines.append(f"    {reason['count']:>6}  {reason['reason']}")
            for item in reported["dead_letters"]:
                if item["why"] == reason["reason"]:
                    d = item["dead_letter"]
                    lines.append(f"              {d['topic']}[{d['partition']}] offset {d['offset']}: {item['detail']}")
        if data["kept"] or not self.selection.everything:
            row(
                "kept", f"{data['kept']}, left out by the filters ({would}written to {topic} again, for a later replay)"
            )
        return "\n".join(lines)
