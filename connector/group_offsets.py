"""A consumer group's offsets as an operator sees them, and moving them.

``offsets``: per partition of the topics asked about, the group's committed offset, the
earliest and end offsets, the lag; and the group's state and members. ``offsets reset``:
a plan (each partition's committed offset, and where it would move), applied only when
asked, and only while the group has no active members, as Kafka's own tool does: a
member commits its own positions and would overwrite the reset, or have read past it.
``replay`` uses the same: its plan's end offsets, and its refusal to share its group.

Everything here is a broker round trip from the command's own thread (the pipeline is
not running); a cluster that does not answer is a KafkaFatalError (exit 5).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from .errors import ConfigError, GroupBusy, KafkaFatalError
from .kafka import CONSUMER_ONLY, Key, rdkafka_log, translate_config_error
from .logs import redact

log = logging.getLogger("connector.offsets")

TIMEOUT_S = 15.0  # one admin request
_NO_OFFSET = -1001  # librdkafka: the group never committed this partition
_FROM_START = {"smallest", "earliest", "beginning"}
# Answers that pass by themselves: a coordinator loading (a fresh broker) or moving, a
# leader being elected. librdkafka does not always mark them retriable.
_TRANSIENT = {
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError.NOT_COORDINATOR,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.REQUEST_TIMED_OUT,
}
SESSION_TIMEOUT_MS = 45_000  # librdkafka's and the brokers' default session.timeout.ms


def session_timeout_s(props: dict[str, str]) -> float:
    """How long a member that stopped without leaving stays in its group."""
    try:
        return int(props.get("session.timeout.ms", SESSION_TIMEOUT_MS)) / 1000
    except ValueError:
        return SESSION_TIMEOUT_MS / 1000


def parse_instant(text: str, what: str) -> int:
    """An ISO-8601 date and time as epoch milliseconds; a time without an offset is UTC.
    ``what`` names the option in the error."""
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(
            f"{what}: expected an ISO-8601 date and time such as 2026-03-01T09:30:00Z, found {text!r}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return int(moment.timestamp() * 1000)


def format_instant(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# -- what the cluster says ------------------------------------------------------------------


@dataclass(frozen=True)
class Member:
    member_id: str
    client_id: str
    host: str
    instance_id: str | None
    assignment: tuple[Key, ...]

    def describe(self) -> str:
        static = f", static member {self.instance_id}" if self.instance_id else ""
        return f"{self.client_id} on {self.host.lstrip('/')} (member {self.member_id}{static})"

    def as_dict(self) -> dict[str, Any]:
        return {
            "member_id": self.member_id,
            "client_id": self.client_id,
            "host": self.host.lstrip("/"),
            "group_instance_id": self.instance_id,
            "assignment": [f"{t}[{p}]" for t, p in self.assignment],
        }


@dataclass(frozen=True)
class GroupState:
    group: str
    state: str  # Kafka's name: Stable, Empty, Dead (no such group), PreparingRebalance...
    members: tuple[Member, ...] = ()

    def refuse_if_active(self, doing: str, hint: str = "stop them (scale the connector to 0)") -> None:
        """GroupBusy, naming every member, while the group has any."""
        if self.members:
            names = "; ".join(m.describe() for m in self.members)
            raise GroupBusy(
                f"consumer group {self.group!r} has {len(self.members)} active member"
                f"{'s' if len(self.members) != 1 else ''} ({self.state}): {names}. Refusing to {doing} "
                f"while it is in use: {hint}, then run this again"
            )


@dataclass(frozen=True)
class Position:
    """One partition: the group's committed offset (None: never committed) and the log's
    earliest and end offsets."""

    topic: str
    partition: int
    committed: int | None
    earliest: int
    end: int

    @property
    def key(self) -> Key:
        return (self.topic, self.partition)

    def lag(self, from_start: bool) -> int:
        """Messages the group has still to read; never committed, it starts where
        ``auto.offset.reset`` says."""
        start = self.committed if self.committed is not None else (self.earliest if from_start else self.end)
        return max(0, self.end - max(start, self.earliest))


class GroupAdmin:
    """One admin client for a command's broker round trips."""

    def __init__(
        self, props: dict[str, str], factory: Callable[[dict], Any] = AdminClient, timeout_s: float = TIMEOUT_S
    ):
        conf: dict[str, Any] = {k: v for k, v in props.items() if k not in CONSUMER_ONLY}
        conf["client.id"] = conf.get("client.id", "userflux-connector") + "-admin"
        conf["logger"] = rdkafka_log
        self.timeout_s = timeout_s
        try:
            self.admin = factory(conf)
        except KafkaException as exc:
            raise translate_config_error(exc) from None

    def _ask(self, what: str, request: Callable[[], Any]) -> Any:
        """The answer to ``request()``'s future (or a dict of answers, for a dict of
        futures). What Kafka calls retriable (a coordinator still loading, or moving) is
        asked again, for up to ``timeout_s`` in all."""
        deadline = time.monotonic() + self.timeout_s
        pause = 0.1
        while True:
            try:
                futures = request()
                if isinstance(futures, dict):
                    return {k: f.result(timeout=self.timeout_s + 5) for k, f in futures.items()}
                return futures.result(timeout=self.timeout_s + 5)
            except KafkaException as exc:
                error = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
                transient = error is not None and (error.retriable() or error.code() in _TRANSIENT)
                if error is not None and transient and time.monotonic() + pause < deadline:
                    log.debug("Kafka: %s; asking again for %s", error.str(), what)
                    time.sleep(pause)
                    pause = min(1.0, pause * 2)
                    continue
                raise KafkaFatalError(f"Kafka did not answer {what}: {redact(str(exc))}") from None
            except TimeoutError:
                raise KafkaFatalError(f"Kafka did not answer {what} within {self.timeout_s:g}s") from None

    def topics(self) -> dict[str, int]:
        """Every topic of the cluster (internal ones left out) and its partition count."""
        try:
            meta = self.admin.list_topics(timeout=self.timeout_s)
        except KafkaException as exc:
            raise KafkaFatalError(f"Kafka did not answer the list of topics: {redact(str(exc))}") from None
        return {
            name: len(topic.partitions)
            for name, topic in meta.topics.items()
            if topic.error is None and not name.startswith("__")
        }

    def state(self, group: str) -> GroupState:
        found = self._ask(
            f"the description of group {group!r}",
            lambda: self.admin.describe_consumer_groups([group], request_timeout=self.timeout_s)[group],
        )
        name = found.state.name if found.state is not None else "UNKNOWN"
        members = tuple(
            Member(
                m.member_id,
                m.client_id,
                m.host,
                m.group_instance_id,
                tuple(
                    sorted((tp.topic, tp.partition) for tp in (m.assignment.topic_partitions if m.assignment else []))
                ),
            )
            for m in found.members
        )
        return GroupState(group, _state_name(name), members)

    def state_once_left(self, group: str, wait_s: float, poll_s: float = 1.0) -> GroupState:
        """The group's state once it has no members, or after ``wait_s``: a member that
        was killed stays in the group until its session times out, and only then is gone."""
        state = self.state(group)
        if state.members:
            log.warning(
                "consumer group %r has %d active member(s): %s; a process that was killed stays a member "
                "until its session times out, so waiting up to %.0fs for them to leave",
                group,
                len(state.members),
                "; ".join(m.describe() for m in state.members),
                wait_s,
            )
            deadline = time.monotonic() + wait_s
            while state.members and time.monotonic() < deadline:
                time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))
                state = self.state(group)
        return state

    def positions(self, group: str, keys: Iterable[Key]) -> list[Position]:
        keys = sorted(set(keys))
        if not keys:
            return []
        earliest = self._list_offsets(keys, OffsetSpec.earliest())
        end = self._list_offsets(keys, OffsetSpec.latest())
        committed = self.committed(group, keys)
        return [Position(t, p, committed.get((t, p)), earliest[(t, p)], end[(t, p)]) for t, p in keys]

    def committed(self, group: str, keys: list[Key]) -> dict[Key, int]:
        request = [ConsumerGroupTopicPartitions(group, [TopicPartition(t, p) for t, p in keys])]
        answer = self._ask(
            f"the committed offsets of group {group!r}",
            lambda: self.admin.list_consumer_group_offsets(request, request_timeout=self.timeout_s)[group],
        )
        out = {}
        for tp in answer.topic_partitions:
            if tp.error is not None:
                raise KafkaFatalError(f"Kafka refused the committed offset of {tp.topic}[{tp.partition}]: {tp.error}")
            if tp.offset != _NO_OFFSET and tp.offset >= 0:
                out[(tp.topic, tp.partition)] = tp.offset
        return out

    def offsets_at(self, keys: list[Key], ms: int) -> dict[Key, int | None]:
        """Per partition, the first offset whose timestamp is at or after ``ms``; None
        when every message is older."""
        found = self._list_offsets(keys, OffsetSpec.for_timestamp(ms))
        return {k: (o if o >= 0 else None) for k, o in found.items()}

    def _list_offsets(self, keys: list[Key], spec: Any) -> dict[Key, int]:
        request = {TopicPartition(t, p): spec for t, p in keys}
        answers = self._ask(
            f"the offsets of {_names(keys)}",
            lambda: self.admin.list_offsets(request, request_timeout=self.timeout_s),
        )
        return {(tp.topic, tp.partition): answer.offset for tp, answer in answers.items()}

    def commit(self, group: str, targets: dict[Key, int]) -> None:
        """Set the group's committed offsets (the group must have no active member)."""
        request = [
            ConsumerGroupTopicPartitions(group, [TopicPartition(t, p, o) for (t, p), o in sorted(targets.items())])
        ]
        answer = self._ask(
            f"the new offsets of group {group!r}",
            lambda: self.admin.alter_consumer_group_offsets(request, request_timeout=self.timeout_s)[group],
        )
        failed = [f"{tp.topic}[{tp.partition}]: {tp.error}" for tp in answer.topic_partitions if tp.error is not None]
        if failed:
            raise KafkaFatalError(f"Kafka refused some of the new offsets of group {group!r}: {'; '.join(failed)}")


def _names(keys: list[Key]) -> str:
    shown = ", ".join(f"{t}[{p}]" for t, p in keys[:5])
    return shown + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")


def _state_name(name: str) -> str:
    """librdkafka's enum name as Kafka names the state: PREPARING_REBALANCING -> PreparingRebalance."""
    known = {"PREPARING_REBALANCING": "PreparingRebalance", "COMPLETING_REBALANCING": "CompletingRebalance"}
    return known.get(name, name.title().replace("_", ""))


# -- the mapped topics ----------------------------------------------------------------------


def mapped_partitions(
    admin: GroupAdmin, matches: Callable[[str], bool], names: list[str]
) -> tuple[list[Key], list[str]]:
    """The partitions of every cluster topic the mappings read, and the topics the mappings
    name that the cluster does not have (yet)."""
    cluster = admin.topics()
    keys = [(t, p) for t, n in sorted(cluster.items()) if matches(t) for p in range(n)]
    missing = [name for name in names if not name.startswith("^") and name not in cluster]
    return keys, missing


def select(keys: list[Key], wanted: list[str]) -> list[Key]:
    """``--topic T`` or ``T:P[,P...]`` (repeatable) narrowed to ``keys``; ConfigError for a
    topic or partition not among them."""
    if not wanted:
        return keys
    topics = {t for t, _ in keys}
    chosen: set[Key] = set()
    for item in wanted:
        topic, sep, parts = item.rpartition(":") if ":" in item else (item, "", "")
        if topic not in topics:
            raise ConfigError(
                f"--topic {item}: {topic!r} is not a topic the mappings read on this cluster "
                f"(they read: {', '.join(sorted(topics)) or 'none'})"
            )
        if not sep:
            chosen |= {k for k in keys if k[0] == topic}
            continue
        for part in parts.split(","):
            try:
                key = (topic, int(part))
            except ValueError:
                raise ConfigError(f"--topic {item}: expected TOPIC:PARTITION[,PARTITION...], found {part!r}") from None
            if key not in keys:
                count = sum(1 for k in keys if k[0] == topic)
                raise ConfigError(f"--topic {item}: {topic} has partitions 0 to {count - 1}, not {part}")
            chosen.add(key)
    return sorted(chosen)


# -- show -----------------------------------------------------------------------------------


def report(state: GroupState, positions: list[Position], missing: list[str], props: dict[str, str]) -> dict[str, Any]:
    from_start = props.get("auto.offset.reset", "largest").lower() in _FROM_START
    rows = [
        {
            "topic": p.topic,
            "partition": p.partition,
            "committed": p.committed,
            "earliest": p.earliest,
            "end": p.end,
            "lag": p.lag(from_start),
        }
        for p in positions
    ]
    return {
        "group": state.group,
        "state": state.state,
        "members": [m.as_dict() for m in state.members],
        "partitions": rows,
        "lag": sum(r["lag"] for r in rows),
        "missing_topics": missing,
    }


def render_report(data: dict[str, Any], output: str) -> str:
    if output == "json":
        return json.dumps(data, ensure_ascii=False)
    members = data["members"]
    lines = [f"group {data['group']}: {data['state']}, {len(members)} member{'s' if len(members) != 1 else ''}"]
    for m in members:
        static = f", static member {m['group_instance_id']}" if m["group_instance_id"] else ""
        assigned = ", ".join(m["assignment"]) or "no partitions"
        lines.append(f"  {m['client_id']} on {m['host']} (member {m['member_id']}{static}): {assigned}")
    table = [["TOPIC", "PARTITION", "COMMITTED", "END", "LAG"]]
    for r in data["partitions"]:
        committed = "-" if r["committed"] is None else str(r["committed"])
        table.append([r["topic"], str(r["partition"]), committed, str(r["end"]), str(r["lag"])])
    lines.append(_table(table))
    lines.append(f"total lag: {data['lag']}")
    if any(r["committed"] is None for r in data["partitions"]):
        lines.append("-: never committed; the group starts there where kafka.auto.offset.reset says")
    for topic in data["missing_topics"]:
        lines.append(f"topic {topic} does not exist (yet)")
    return "\n".join(lines)


# -- reset ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    kind: str  # earliest, latest, datetime, offset
    value: int | None = None  # epoch ms for datetime, the offset for offset
    text: str = ""

    @classmethod
    def parse(cls, words: list[str]) -> Target:
        usage = "--to: expected earliest, latest, datetime <ISO-8601> or offset <n>"
        if not words:
            raise ConfigError(usage)
        kind, rest = words[0].lower(), words[1:]
        if kind in ("earliest", "latest") and not rest:
            return cls(kind)
        if kind == "datetime" and len(rest) == 1:
            return cls(kind, parse_instant(rest[0], "--to datetime"), rest[0])
        if kind == "offset" and len(rest) == 1:
            try:
                offset = int(rest[0])
            except ValueError:
                raise ConfigError(f"--to offset: expected a whole number, found {rest[0]!r}") from None
            if offset < 0:
                raise ConfigError(f"--to offset: expected 0 or more, found {offset}")
            return cls(kind, offset, rest[0])
        raise ConfigError(f"{usage}, found {' '.join(words)!r}")

    def describe(self) -> str:
        if self.kind == "datetime":
            assert self.value is not None
            return f"datetime {format_instant(self.value)}"
        return f"{self.kind} {self.text}".strip()


@dataclass(frozen=True)
class Move:
    position: Position
    target: int
    note: str = ""

    @property
    def changes(self) -> bool:
        return self.position.committed != self.target


@dataclass
class ResetPlan:
    group: str
    state: GroupState
    target: Target
    moves: list[Move] = field(default_factory=list)

    def as_dict(self, executed: bool) -> dict[str, Any]:
        return {
            "group": self.group,
            "state": self.state.state,
            "members": [m.as_dict() for m in self.state.members],
            "to": self.target.describe(),
            "executed": executed,
            "partitions": [
                {
                    "topic": m.position.topic,
                    "partition": m.position.partition,
                    "committed": m.position.committed,
                    "new": m.target,
                    **({"note": m.note} if m.note else {}),
                }
                for m in self.moves
            ],
        }


def plan_reset(admin: GroupAdmin, group: str, keys: list[Key], target: Target) -> ResetPlan:
    state = admin.state(group)
    positions = admin.positions(group, keys)
    at: dict[Key, int | None] = {}
    if target.kind == "datetime":
        assert target.value is not None
        at = admin.offsets_at([p.key for p in positions], target.value)
    plan = ResetPlan(group, state, target)
    for p in positions:
        note = ""
        if target.kind == "earliest":
            new = p.earliest
        elif target.kind == "latest":
            new = p.end
        elif target.kind == "datetime":
            found = at.get(p.key)
            new, note = (found, "") if found is not None else (p.end, "every message is older: the end")
        else:
            assert target.value is not None
            new = min(max(target.value, p.earliest), p.end)
            if new != target.value:
                instead = "the end" if new == p.end else "the earliest"
                note = f"offset {target.value} is outside {p.earliest}..{p.end}: {instead}"
        plan.moves.append(Move(p, new, note))
    return plan


def execute(admin: GroupAdmin, plan: ResetPlan) -> int:
    """Apply the plan (asking the group's state again first); how many partitions moved."""
    admin.state(plan.group).refuse_if_active("reset its offsets")
    targets = {m.position.key: m.target for m in plan.moves if m.changes}
    if targets:
        admin.commit(plan.group, targets)
    return len(targets)


def render_plan(plan: ResetPlan, output: str, executed: bool, moved: int = 0) -> str:
    if output == "json":
        return json.dumps(plan.as_dict(executed), ensure_ascii=False)
    lines = [f"reset of group {plan.group} ({plan.state.state}) to {plan.target.describe()}:"]
    table = [["TOPIC", "PARTITION", "COMMITTED", "NEW", ""]]
    for m in plan.moves:
        committed = "-" if m.position.committed is None else str(m.position.committed)
        table.append([m.position.topic, str(m.position.partition), committed, str(m.target), m.note])
    lines.append(_table(table))
    if executed:
        lines.append(f"applied: {moved} partition{'s' if moved != 1 else ''} moved")
    else:
        lines.append("nothing changed: run again with --execute to apply this plan")
    return "\n".join(lines)


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)
