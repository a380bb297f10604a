"""``userflux-connector``: run, check, map, replay and offsets.

    userflux-connector run     --config F [--dry-run]
    userflux-connector check   --config F
    userflux-connector map     --config F --topic T   < values.jsonl
    userflux-connector replay  --config F [--dry-run] [--stage S] [--source-topic T] [--since/--until ISO]
    userflux-connector offsets --config F [reset --to earliest|latest|datetime ISO|offset N [--topic T[:P]] [--execute]]

Exit codes: 0 done, 1 unexpected error (for map: a line is invalid), 2 bad
configuration or usage, 3 UserFlux refused the key or the address (or the schema registry
the credentials), 4 an invalid message met on_invalid: stop, 5 Kafka failed for good, 6
replay: dead letters were left, 7 a group is in use (offsets reset, a second replay) or
a replay stopped before its end.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

from . import __version__, logs
from .config.model import DEFAULT_DESTINATION, DestinationSettings
from .errors import ConfigError, ConnectorError, InvalidMessage
from .startup import Startup, load_config

log = logging.getLogger("connector")

MAX_REPLAYS = 3  # replay --max-replays, by default


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logs.setup(args.log_level, args.log_format)
    try:
        return args.command(args)
    except ConnectorError as exc:
        print(f"error: {logs.redact(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="userflux-connector",
        description="Stream product-analytics events from Apache Kafka to UserFlux, at least once.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    def command(name: str, help_text: str, func) -> argparse.ArgumentParser:
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        cmd.add_argument("--config", "-c", required=True, metavar="FILE", help="the connector's YAML configuration")
        cmd.add_argument(
            "--log-level",
            default="INFO",
            choices=["DEBUG", "INFO", "WARNING", "ERROR"],
            type=str.upper,
            help="log verbosity (default INFO)",
        )
        cmd.add_argument(
            "--log-format",
            default="text",
            choices=["text", "json"],
            help="log lines as text or JSON objects, on stderr (default text)",
        )
        cmd.set_defaults(command=func)
        return cmd

    run = command("run", "Consume the mapped topics and deliver them to UserFlux.", _run)
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="consume and map for real, print the batches on stdout instead of posting them, "
        "commit nothing (uses the consumer group <group.id>.dry-run)",
    )
    command("check", "Validate the configuration and print a summary of the mappings.", _check)
    replay = command(
        "replay",
        "Deliver the dead letters again, through the mappings as they are now; stop at the end offsets "
        "the dead-letter topic had at the start (consumer group <group.id>.replay).",
        _replay,
    )
    replay.add_argument(
        "--dry-run",
        action="store_true",
        help="read and map for real, print what would be delivered, still invalid or kept; send, write and "
        "commit nothing",
    )
    replay.add_argument(
        "--max-replays",
        type=_count,
        default=MAX_REPLAYS,
        metavar="N",
        help=f"a dead letter still invalid after N replays is reported, not written again (default {MAX_REPLAYS})",
    )
    replay.add_argument(
        "--stage",
        action="append",
        default=[],
        choices=["deserialize", "map", "deliver"],
        help="only dead letters of this stage (userflux.error.stage); repeatable",
    )
    replay.add_argument(
        "--source-topic",
        action="append",
        default=[],
        metavar="TOPIC",
        help="only dead letters read from this topic (userflux.source.topic); repeatable",
    )
    replay.add_argument("--since", metavar="ISO-8601", help="only dead letters with a timestamp at or after this")
    replay.add_argument("--until", metavar="ISO-8601", help="only dead letters with a timestamp before this")
    _output(replay)
    offsets = command(
        "offsets",
        "Show the consumer group's committed offset, end offset and lag per partition of the mapped "
        "topics, and its state and members; or plan and apply a reset of its offsets.",
        _offsets,
    )
    offsets.add_argument("action", nargs="?", choices=["reset"], help="reset: move the group's committed offsets")
    offsets.add_argument(
        "--to",
        nargs="+",
        metavar="WHERE",
        help="reset to: earliest, latest, datetime <ISO-8601> (the first message at or after it), or offset <n>",
    )
    offsets.add_argument(
        "--topic",
        action="append",
        default=[],
        metavar="T[:P]",
        help="reset only topic T, or its partitions P (T:0,2); repeatable (default: every mapped topic)",
    )
    offsets.add_argument(
        "--execute",
        action="store_true",
        help="apply the plan (refused while the group has active members); without it, only print it",
    )
    _output(offsets)
    mapper = command(
        "map",
        "Map message values read on stdin, one JSON value per line, and print each result. For "
        "Avro, Protobuf and JSON Schema topics give the decoded form, the JSON value the mapping "
        "sees (docs/mapping.md); no registry is asked.",
        _map,
    )
    mapper.add_argument("--topic", "-t", required=True, help="the topic the values are read as coming from")
    mapper.add_argument(
        "--key",
        help="the Kafka key every value is given (for @key); as JSON, the decoded form, when the "
        "mapping's key_format is not string",
    )
    mapper.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a Kafka header every value is given (for @headers.NAME); repeatable",
    )
    mapper.add_argument(
        "--timestamp",
        type=int,
        metavar="MS",
        help="the Kafka timestamp, epoch milliseconds (for @timestamp; default: now)",
    )
    return parser


def _output(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument(
        "--output",
        "-o",
        default="text",
        choices=["text", "json"],
        help="the report on stdout as text or as one JSON object (default text)",
    )


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, found {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more, found {value}")
    return value


def _load(args: argparse.Namespace) -> Startup:
    startup = load_config(args.config)
    logs.add_secrets(startup.settings.secrets)
    return startup


# -- run ------------------------------------------------------------------------------------


def _run(args: argparse.Namespace) -> int:
    from .health import HealthServer
    from .pipeline import Pipeline

    startup = _load(args)
    settings = startup.settings
    pipeline = Pipeline(startup, dry_run=args.dry_run)
    server = None
    if settings.metrics.enabled:
        try:
            server = HealthServer(settings.metrics.host, settings.metrics.port, pipeline.status).start()
        except OSError as exc:
            raise ConfigError(
                f"metrics.port: cannot listen on {settings.metrics.host}:{settings.metrics.port}: {exc.strerror}"
            ) from None
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda s, _frame: pipeline.request_stop(s))
    _tune_gc()
    try:
        code = pipeline.run()
    finally:
        if server is not None:
            server.stop()
    return _leave(pipeline, code)


def _leave(pipeline: Any, code: int) -> int:
    if not pipeline.closed_cleanly:
        # librdkafka is still waiting for brokers that do not answer, and would hold the
        # interpreter's exit as long: leave now (stdout and the logs are flushed first).
        sys.stdout.flush()
        logging.shutdown()
        os._exit(code)
    return code


# -- replay ---------------------------------------------------------------------------------


def _replay(args: argparse.Namespace) -> int:
    from .group_offsets import GroupAdmin, parse_instant, session_timeout_s
    from .pipeline import Pipeline
    from .replay import Replay, ReplayPlan, Selection

    startup = _load(args)
    settings = startup.settings
    if settings.dead_letter is None:
        raise ConfigError("dead_letter.topic: not set, so there is no dead-letter topic to replay")
    selection = Selection(
        frozenset(args.stage),
        frozenset(args.source_topic),
        parse_instant(args.since, "--since") if args.since else None,
        parse_instant(args.until, "--until") if args.until else None,
    )
    group = settings.kafka["group.id"] + ".replay"
    admin = GroupAdmin(settings.kafka)
    # One replay at a time: a second would take half the partitions and end half-done.
    state = admin.state_once_left(group, session_timeout_s(settings.kafka) + 5)
    state.refuse_if_active("start a replay", "another replay is running; let it finish or stop it")
    plan = ReplayPlan.from_cluster(admin, settings.dead_letter.topic, group)
    replay = Replay(plan, selection, args.max_replays, dry_run=args.dry_run)
    if not plan.work:
        log.info("replay: no dead letters in %s past what group %r committed", plan.topic, group)
        print(replay.render(args.output))
        return replay.exit_code()
    pipeline = Pipeline(startup, dry_run=args.dry_run, replay=replay)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda s, _frame: pipeline.request_stop(s))
    code = pipeline.run() or replay.exit_code()
    print(logs.redact(replay.render(args.output)), flush=True)
    log.info("replay: exit code %d (%s)", code, _REPLAY_EXITS.get(code, "see the error above"))
    return _leave(pipeline, code)


_REPLAY_EXITS = {
    0: "every dead letter up to the end was delivered",
    6: "dead letters were left: still invalid, or not replayable; see the summary",
    7: "stopped before the end: run it again to resume",
}


# -- offsets --------------------------------------------------------------------------------


def _offsets(args: argparse.Namespace) -> int:
    from .group_offsets import (
        GroupAdmin,
        Target,
        execute,
        mapped_partitions,
        plan_reset,
        render_plan,
        render_report,
        report,
        select,
    )
    from .mapping.mapper import MessageMapper

    startup = _load(args)
    settings = startup.settings
    if args.action is None and (args.to or args.execute or args.topic):
        raise ConfigError("--to, --topic and --execute belong to `offsets reset`")
    if args.action == "reset" and not args.to:
        raise ConfigError("offsets reset: --to is required (earliest, latest, datetime <ISO-8601> or offset <n>)")
    mapper = MessageMapper(startup.mappings, settings.limits)
    group = settings.kafka["group.id"]
    admin = GroupAdmin(settings.kafka)
    keys, missing = mapped_partitions(admin, lambda t: mapper.mapping_for(t) is not None, mapper.subscription())
    if args.action is None:
        data = report(admin.state(group), admin.positions(group, keys), missing, settings.kafka)
        print(render_report(data, args.output))
        return 0
    target = Target.parse(args.to)
    plan = plan_reset(admin, group, select(keys, args.topic), target)
    if not args.execute:
        print(render_plan(plan, args.output, executed=False))
        return 0
    plan.state.refuse_if_active("reset its offsets")
    moved = execute(admin, plan)
    print(render_plan(plan, args.output, executed=True, moved=moved))
    return 0


def _tune_gc() -> None:
    """Every message allocates a few dozen objects that reference counting frees at once;
    with the default threshold (700) the cyclic collector still walked the young ones
    every few messages, about a fifth of the main loop's CPU. Collect far less often, and
    leave what start-up made (modules, configuration) out of every collection."""
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)


# -- check ----------------------------------------------------------------------------------


def _check(args: argparse.Namespace) -> int:
    from confluent_kafka import Producer

    from .dead_letter import producer_config
    from .kafka import validate_properties
    from .source import consumer_config

    startup = _load(args)
    settings = startup.settings
    validate_properties(consumer_config(settings.kafka))
    if settings.dead_letter is not None:
        validate_properties(producer_config(settings.kafka, settings.dead_letter), "dead_letter.producer", Producer)
    print(logs.redact(summary(startup)))  # masks secrets, as every log line
    return 0


def summary(startup: Startup) -> str:
    settings = startup.settings
    uf, kafka = settings.userflux, settings.kafka
    lines = [f"{settings.source}: OK"]
    others = len([k for k in kafka if k not in ("bootstrap.servers", "group.id")])
    lines.append(
        f"kafka: {kafka.get('bootstrap.servers', kafka.get('metadata.broker.list'))}, "
        f"group {kafka.get('group.id')}" + (f" (+{others} more properties)" if others else "")
    )
    lines.append(
        f"userflux: {uf.base_url}, batches of up to {uf.batch_size}, linger {uf.linger_ms} ms, "
        f"{uf.max_in_flight} in flight{' per destination' if uf.destinations else ''}, "
        f"timeout {uf.request_timeout_s:g}s, retries "
        + (f"up to {uf.retry.max_attempts} attempts" if uf.retry.max_attempts else "forever")
    )
    for destination in uf.all_destinations:
        used = [str(m.index) for m in startup.mappings if m.destination == destination.name]
        if (
            not uf.destinations
            and destination.max_events_per_second is None
            and not destination.max_requests_per_second
        ):
            break  # one destination, no cap: the line above says it all
        lines.append(
            f"destination {destination.name}: {destination.base_url}, {_caps(destination)}, "
            + (f"mappings {', '.join(used)}" if used else "no mapping uses it")
        )
    if settings.dead_letter is not None and settings.on_invalid == "dead_letter":
        lines.append(f"invalid messages: dead-lettered to {settings.dead_letter.topic}")
    else:
        lines.append(f"invalid messages: {settings.on_invalid}")
    registry = settings.schema_registry
    if registry is not None:
        auth = "basic auth" if registry.username else "bearer token" if registry.bearer_token else "no auth"
        lines.append(
            f"schema registry: {', '.join(registry.urls)} ({auth}), timeout {registry.request_timeout_s:g}s, "
            f"up to {registry.cache_size} schemas cached"
        )
    lines.append(
        "metrics: "
        + (
            f"http://{settings.metrics.host}:{settings.metrics.port}/metrics"
            if settings.metrics.enabled
            else "disabled"
        )
    )
    lines.append("mappings (the first whose topics match a message wins):")
    for mapping in startup.mappings:
        what = mapping.source
        extra = f", {mapping.value_format} values" if mapping.value_format != "json" else ""
        if mapping.key_format != "string":
            extra += f", {mapping.key_format} keys"
        extra += f", locationEnrichment={'true' if mapping.location_enrichment else 'false'}"
        if mapping.destination != DEFAULT_DESTINATION:
            extra += f", to destination {mapping.destination}"
        if mapping.where is not None:
            extra += f", only where {mapping.where.describe()}"
        lines.append(f"  [{mapping.index}] {what}{extra}")
        for field, text in mapping.builder.summary():
            lines.append(f"      {field:<12} {text}")
    return "\n".join(lines)


def _caps(destination: DestinationSettings) -> str:
    caps = []
    if destination.max_events_per_second is not None:
        caps.append(f"at most {destination.max_events_per_second:g} events/s")
    if destination.max_requests_per_second is not None:
        caps.append(f"at most {destination.max_requests_per_second:g} requests/s")
    return " and ".join(caps) or "no rate cap"


# -- map ------------------------------------------------------------------------------------


class LineMessage:
    """A value read from stdin, dressed as a Kafka message for the mapping."""

    __slots__ = ("_topic", "_offset", "_value", "_key", "_headers", "_timestamp")

    def __init__(
        self,
        topic: str,
        offset: int,
        value: bytes,
        key: bytes | None,
        headers: list[tuple[str, bytes]],
        timestamp_ms: int,
    ):
        self._topic, self._offset, self._value = topic, offset, value
        self._key, self._headers, self._timestamp = key, headers, timestamp_ms

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes:
        return self._value

    def headers(self) -> list[tuple[str, bytes]]:
        return self._headers

    def timestamp(self) -> tuple[int, int]:
        return (1, self._timestamp)  # 1: CreateTime


def _map(args: argparse.Namespace, stdin: TextIO | None = None, stdout: TextIO | None = None) -> int:
    from .mapping.mapper import MessageMapper

    startup = _load(args)
    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    mapper = MessageMapper(startup.mappings, startup.settings.limits)
    mapping = mapper.mapping_for(args.topic)
    if mapping is None:
        raise ConfigError(
            f"--topic {args.topic}: no mapping takes this topic; the mappings read {', '.join(mapper.subscription())}"
        )
    headers = []
    for item in args.header:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ConfigError(f"--header {item!r}: expected NAME=VALUE")
        headers.append((name, value.encode()))
    key = args.key.encode() if args.key is not None else None
    timestamp = args.timestamp if args.timestamp is not None else int(time.time() * 1000)
    invalid = 0
    # Bytes when stdin has them: a line that is not UTF-8 is then an invalid value, not a crash.
    for number, line in enumerate(getattr(stdin, "buffer", stdin), start=1):
        raw = line if isinstance(line, bytes) else line.encode("utf-8", "surrogateescape")
        if not raw.strip():
            continue
        message = LineMessage(args.topic, number - 1, raw.rstrip(b"\r\n"), key, headers, timestamp)
        result: dict[str, Any] = {"line": number}
        try:
            used, event = mapper.map(message)
        except InvalidMessage as exc:
            invalid += 1
            result.update(invalid=exc.reason, stage=exc.stage)
        else:
            if event is None:
                assert used.where is not None  # only a filter skips
                result["skipped"] = used.where.skip_reason(mapper.decode(message.value()), message)
            else:
                if used.destination != DEFAULT_DESTINATION:
                    result["destination"] = used.destination
                result.update(locationEnrichment=used.location_enrichment, event=event)
        stdout.write(logs.redact(json.dumps(result, ensure_ascii=False)) + "\n")
    stdout.flush()
    return 1 if invalid else 0
