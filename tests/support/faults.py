"""The fault suite's harness: events with unique ids, the real CLI, and the checks every
scenario ends with.

Each scenario produces events whose properties carry a unique ``uid`` (some of them
invalid on purpose), runs one or more ``userflux-connector run`` processes against the
real broker and the UserFlux stand-in, made slow enough that requests are in flight when
a fault lands, and finally checks:

* every valid event was accepted by the stand-in at least once;
* every invalid one is in the dead-letter topic, with its reason;
* the group's offsets reach the end of every partition, and never passed a message that
  was neither accepted nor dead-lettered (checked at any moment with ``committed_ok``);
* duplicates stay within the bound the configuration allows (``duplicate_bound``);
* no process crashed on its own, and no secret appears in anything it printed or served.

``make soak`` sets USERFLUX_SOAK=1: the same scenarios with bigger volumes, longer faults
and more repetitions. Each scenario's figures go to a report (``report()``), which the
soak run prints and writes to .cache/soak/report.json.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Producer

from tests.conftest import API_KEY
from tests.support.connector_process import REPO, ConnectorProcess, base_config, write_config
from tests.support.kafka_tools import committed, end_offsets, new_topic, read_all, unique, wait_until
from tests.support.userflux_standin import UserFluxStandIn

SOAK = os.environ.get("USERFLUX_SOAK") == "1"
REPORT_PATH = REPO / ".cache" / "soak" / "report.json"
_results: list[dict] = []


def scale(fast: Any, soak: Any) -> Any:
    """The fast figure for `make test`, the big one for `make soak`."""
    return soak if SOAK else fast


def report(name: str, **figures: Any) -> None:
    """Record a scenario's figures (printed at the end of the session, written by soak)."""
    _results.append({"scenario": name, "soak": SOAK, **figures})
    if SOAK:
        REPORT_PATH.parent.mkdir(parents=True, exist_ok=True)
        REPORT_PATH.write_text(json.dumps(_results, indent=2) + "\n")


def results() -> list[dict]:
    return list(_results)


def event(uid: str) -> dict:
    return {
        "event": "page_view",
        "user": {"id": uid},
        "sent_at": 1_700_000_000_000,
        "properties": {"uid": uid, "path": "/pricing", "plan": "pro"},
    }


MAPPING = {"event": {"name": "event", "userId": "user.id", "timestamp": "sent_at", "properties": "properties"}}
INVALID = b"{not json"


@dataclass
class Produced:
    valid: dict[str, tuple[int, int]] = field(default_factory=dict)  # uid -> (partition, offset)
    invalid: set[tuple[int, int]] = field(default_factory=set)  # (partition, offset)


class EventSource:
    """Produces the scenario's events; in the background at a steady rate, or at once."""

    def __init__(self, bootstrap: str, topic: str, prefix: str, invalid_every: int = 0):
        self.topic, self.prefix, self.invalid_every = topic, prefix, invalid_every
        self.producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
        self.produced = Produced()
        self._count = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors: list[str] = []

    def produce(self, n: int) -> None:
        for _ in range(n):
            i = self._count
            self._count += 1
            if self.invalid_every and i % self.invalid_every == self.invalid_every - 1:
                self.producer.produce(self.topic, value=INVALID, on_delivery=self._invalid_delivered)
            else:
                uid = f"{self.prefix}-{i}"
                self.producer.produce(
                    self.topic,
                    value=json.dumps(event(uid)).encode(),
                    key=uid.encode(),
                    on_delivery=self._valid_delivered(uid),
                )
            if i % 500 == 0:
                self.producer.poll(0)
        assert self.producer.flush(30) == 0, "events not produced within 30s"
        assert not self.errors, self.errors

    def _valid_delivered(self, uid: str):
        def done(error, message) -> None:
            if error is not None:
                self.errors.append(str(error))
            else:
                with self._lock:
                    self.produced.valid[uid] = (message.partition(), message.offset())

        return done

    def _invalid_delivered(self, error, message) -> None:
        if error is not None:
            self.errors.append(str(error))
        else:
            with self._lock:
                self.produced.invalid.add((message.partition(), message.offset()))

    def start(self, per_second: int, max_events: int) -> EventSource:
        """Produce about ``per_second`` events a second in the background, at most ``max_events``."""

        def run() -> None:
            produced = 0
            while not self._stop.is_set() and produced < max_events:
                chunk = min(max(1, per_second // 10), max_events - produced)
                self.produce(chunk)
                produced += chunk
                self._stop.wait(0.1)

        self._thread = threading.Thread(target=run, name="event-source", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> Produced:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(60)
            assert not self._thread.is_alive(), "the event source did not stop"
        self.producer.flush(30)
        return self.produced


class Scenario:
    """One run of a fault scenario: a topic, a dead-letter topic, a group, a slowed stand-in
    and every connector process started, for the final checks."""

    def __init__(
        self,
        name: str,
        bootstrap: str,
        standin: UserFluxStandIn,
        tmp_path: pathlib.Path,
        partitions: int = 4,
        latency_s: float = 0.1,
        invalid_every: int = 25,
        create_dlq: bool = True,
        **sections: Any,
    ):
        self.name, self.bootstrap, self.standin, self.dir = name, bootstrap, standin, tmp_path
        self.partitions = partitions
        self.topic = new_topic(bootstrap, name, partitions=partitions)
        self.dlq = new_topic(bootstrap, f"{name}-dlq") if create_dlq else unique(f"{name}-dlq")
        self.group = unique(f"{name}-group")
        self.latency_s = latency_s
        standin.set_delay(latency_s)  # requests are in flight when a fault lands
        self.sections: dict[str, Any] = {
            "userflux": {
                "base_url": standin.base_url,
                "api_key": API_KEY,
                "batch_size": 50,
                "max_in_flight": 4,
                "linger_ms": 50,
                "request_timeout_s": 5,
                "retry": {"initial_backoff_ms": 50, "max_backoff_ms": 500},
            },
            "pipeline": {
                "max_pending_messages": 1000,
                "commit_interval_ms": 200,
                "shutdown_grace_s": 10,
                "rebalance_timeout_s": 5,
                "refused_exit_delay_s": 0,
            },
            "on_invalid": "dead_letter",
            "dead_letter": {"topic": self.dlq},
        }
        self.sections = _merge(self.sections, sections)
        self.events = EventSource(bootstrap, self.topic, name, invalid_every)
        self.processes: list[ConnectorProcess] = []
        self.scrapes: list[str] = []
        self._read = 0  # stand-in events counted so far
        self._counts: dict[str, int] = {}

    # -- running the CLI ---------------------------------------------------------------

    def config(self, instance: str, **sections: Any) -> pathlib.Path:
        config = base_config(
            self.bootstrap,
            self.standin.base_url,
            API_KEY,
            self.group,
            [{"topics": [self.topic], **MAPPING}],
            **_merge(self.sections, sections),
        )
        return write_config(self.dir / f"{instance}.yaml", config)

    def start(self, instance: str = "c", **sections: Any) -> ConnectorProcess:
        process = ConnectorProcess(self.config(instance, **sections))
        self.processes.append(process)
        return process

    def scrape(self, port: int) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            body = response.read().decode()
        self.scrapes.append(body)
        return body

    # -- what happened -----------------------------------------------------------------

    def accepted(self) -> dict[str, int]:
        """uid -> how many times the stand-in accepted it (read incrementally: a soak's
        stand-in holds hundreds of thousands of events, and it answers while we read)."""
        new = self.standin.events_since(self._read)
        self._read += len(new)
        for e in new:
            uid = e.get("properties", {}).get("uid")
            if uid is not None:
                self._counts[uid] = self._counts.get(uid, 0) + 1
        return self._counts

    def delivered_all(self, produced: Produced) -> bool:
        accepted = self.accepted()
        return all(uid in accepted for uid in produced.valid)

    def committed_ok(self, produced: Produced, dead_lettered: set[tuple[int, int]] | None = None) -> dict[int, int]:
        """The group's offsets never passed a message that is neither accepted nor dead-lettered."""
        accepted = self.accepted()
        positions = committed(self.bootstrap, self.group, self.topic, self.partitions)
        settled = {pos for uid, pos in produced.valid.items() if uid in accepted}
        settled |= produced.invalid if dead_lettered is None else dead_lettered
        for partition, position in positions.items():
            behind = [(p, o) for uid, (p, o) in produced.valid.items() if p == partition and o < position]
            behind += [(p, o) for p, o in produced.invalid if p == partition and o < position]
            unsettled = [pos for pos in behind if pos not in settled]
            assert not unsettled, f"{self.topic}[{partition}] committed at {position} past unsettled {unsettled[:5]}"
        return positions

    def dead_letters(self) -> dict[tuple[int, int], str]:
        """(source partition, offset) -> reason, of every message in the dead-letter topic
        (a fault may have dead-lettered a message twice)."""
        found = {}
        total = end_offsets(self.bootstrap, self.dlq)[0]
        for letter in read_all(self.bootstrap, self.dlq, total, timeout_s=30):
            headers = dict(letter.headers() or [])
            found[(int(headers["userflux.source.partition"]), int(headers["userflux.source.offset"]))] = headers[
                "userflux.error.reason"
            ].decode()
        return found

    def finish(self, produced: Produced, duplicates_allowed: int) -> dict[str, Any]:
        """Wait until everything is delivered and committed, then check it all; returns the figures."""
        # The stand-in takes a few thousand events a second: a soak's backlog needs minutes.
        timeout_s = 120 + len(produced.valid) / 2000
        wait_until(
            lambda: self.delivered_all(produced),
            timeout_s,
            f"{len(produced.valid)} events accepted",
            interval_s=0.1 if len(produced.valid) < 50_000 else 1.0,
        )
        ends = end_offsets(self.bootstrap, self.topic, self.partitions)
        wait_until(
            lambda: committed(self.bootstrap, self.group, self.topic, self.partitions) == ends,
            60,
            "offsets committed to the end",
        )
        letters = self.dead_letters()
        assert produced.invalid <= set(letters), f"not dead-lettered: {sorted(produced.invalid - set(letters))[:5]}"
        assert all("not JSON" in letters[pos] for pos in produced.invalid)
        self.committed_ok(produced, set(letters))
        accepted = self.accepted()
        duplicates = sum(accepted.values()) - len(accepted)
        assert duplicates <= duplicates_allowed, f"{duplicates} duplicates, more than the bound {duplicates_allowed}"
        return {
            "valid": len(produced.valid),
            "invalid": len(produced.invalid),
            "duplicates": duplicates,
            "duplicate_bound": duplicates_allowed,
        }

    def check_processes(self, *allowed_codes: int) -> None:
        """No process crashed on its own; nothing printed or served holds the API key."""
        for process in self.processes:
            code = process.process.poll()
            assert code is None or code in allowed_codes or code < 0, f"exit {code}:\n{process.stderr[-3000:]}"
            assert "Traceback" not in process.stderr and "internal error" not in process.stderr, process.stderr[-3000:]
        assert_no_secret(
            API_KEY, [p.stderr for p in self.processes] + [p.stdout for p in self.processes] + self.scrapes
        )

    def duplicate_bound(self, faults: int) -> int:
        """What ``faults`` crashes or rebalances may repeat, from the configuration.

        After a fault, everything past the committed offset is read again. Delivered but
        not committed is at most what is pending (``max_pending_messages``) plus what was
        released since the last commit: the most the senders deliver (``batch_size x
        max_in_flight`` per round trip) over one commit interval and its answer (+0.5 s).
        """
        uf, pipe = self.sections["userflux"], self.sections["pipeline"]
        per_second = uf["batch_size"] * uf["max_in_flight"] / self.latency_s
        per_fault = pipe["max_pending_messages"] + math.ceil(per_second * (pipe["commit_interval_ms"] / 1000 + 0.5))
        return faults * per_fault

    def in_flight_at(self, moments: list[float]) -> int:
        """How many of these moments (monotonic) had a request in flight at the stand-in."""
        spans = [
            (r.received_at, r.answered_at if r.answered_at is not None else float("inf"))
            for r in self.standin.requests()
        ]
        return sum(1 for t in moments if any(start <= t <= end for start, end in spans))

    def close(self) -> None:
        """Whatever happened: no process or producer outlives the test."""
        self.events._stop.set()
        for process in self.processes:
            process.kill()

    def rss_mb(self, process: ConnectorProcess) -> float:
        for line in pathlib.Path(f"/proc/{process.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS")


def _merge(sections: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Sections with overrides merged in, one level deep (as base_config does)."""
    merged = dict(sections)
    for key, value in overrides.items():
        both = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = {**merged[key], **value} if both else value
    return merged


def assert_no_secret(secret: str, texts: list[str]) -> None:
    for text in texts:
        assert secret not in text, "a secret appears in the connector's output or metrics"


def elapsed(started: float) -> float:
    return round(time.monotonic() - started, 1)
