"""``make demo``: the connector end to end on this machine, in about a minute.

Starts a local Kafka broker and the UserFlux stand-in, produces sample events (a few of
them invalid on purpose), runs ``userflux-connector run --config config/demo.yaml`` until
they are delivered, prints what UserFlux received and what went to the dead-letter
topic, then stops everything it started.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import time

from tests.support.kafka_broker import KafkaBroker, create_topic, ensure_jars
from tests.support.kafka_tools import all_committed, committed, end_offsets, produce, read_all
from tests.support.userflux_standin import UserFluxStandIn

REPO = pathlib.Path(__file__).resolve().parents[2]
CONFIG = REPO / "config" / "demo.yaml"
API_KEY = "demo-write-key"
GROUP = "userflux-connector-demo"
DEAD_LETTERS = "demo-dead-letters"


def sample_messages() -> dict[str, list[tuple[bytes | None, object, list]]]:
    """Per topic: (key, value, headers). Three values cannot become events and one is filtered out, on purpose."""
    base = 1_764_300_000
    web = [
        (
            None,
            {
                "event": "page_view",
                "user": {"id": 1000 + i},
                "sent_at": base + i,
                "properties": {"path": f"/pricing/{i}", "referrer": "search"},
            },
            [],
        )
        for i in range(60)
    ]
    web.append(
        (
            None,
            {
                "event": "signup",
                "anonymous_id": "anon-42",
                "sent_at": "2025-11-28T09:30:00Z",
                "properties": {"plan": "pro"},
            },
            [],
        )
    )
    web.append((None, b"<html>not json</html>", []))  # invalid: not JSON
    web.append((None, {"event": "Page Viewed", "user": {"id": 7}}, []))  # invalid: white space in the name
    ios = [
        (
            f"user-{i}".encode(),
            {
                "type": "track" if i % 2 else "screen",
                "action": "open",
                "screen": "home",
                **({"user": {"id": f"u{i}"}} if i % 4 == 0 else {}),
            },
            [("device-id", f"ios-device-{i % 3}".encode())],
        )
        for i in range(40)
    ]
    ios.append((b"user-x", {"type": "debug", "action": "trace"}, []))  # skipped by where:
    ios.append((None, {"type": "track"}, []))  # invalid: the template needs an action
    return {"web-events": web, "app.ios": ios}


def main() -> int:
    work = pathlib.Path(tempfile.mkdtemp(prefix="userflux-demo-"))
    step("starting a local Kafka broker (Apache Kafka, KRaft mode, loopback)")
    broker = KafkaBroker(work / "broker", ensure_jars())
    broker.start()
    standin = UserFluxStandIn(api_key=API_KEY).start()
    connector = None
    try:
        bootstrap = broker.bootstrap_servers
        print(f"   Kafka at {bootstrap}, UserFlux stand-in at {standin.base_url}")
        messages = sample_messages()
        for topic in [*messages, DEAD_LETTERS]:
            create_topic(bootstrap, topic, partitions=2 if topic != DEAD_LETTERS else 1)
        for topic, items in messages.items():
            produce(
                bootstrap,
                topic,
                [value for _, value, _ in items],
                key=lambda i, items=items: items[i][0],
                headers=lambda i, items=items: items[i][2] or None,
            )
        total = sum(len(v) for v in messages.values())
        step(f"produced {total} messages to {', '.join(messages)}")

        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "USERFLUX_BASE_URL": standin.base_url,
            "USERFLUX_API_KEY": API_KEY,
        }
        step(f"running: userflux-connector run --config {CONFIG.relative_to(REPO)}")
        log_path = work / "connector.log"
        with open(log_path, "wb") as log:
            connector = subprocess.Popen(
                [sys.executable, "-m", "connector", "run", "--config", str(CONFIG)],
                stdout=log,
                stderr=log,
                env=env,
                cwd=REPO,
            )
            expected_events = 60 + 1 + 40
            standin.wait_for_events(expected_events, timeout_s=90)
            letters = read_all(bootstrap, DEAD_LETTERS, 3, timeout_s=30, partitions=1)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not all(all_committed(bootstrap, GROUP, t, 2) for t in messages):
                time.sleep(0.2)
            connector.send_signal(signal.SIGTERM)
            code = connector.wait(30)
        show_results(standin, letters, bootstrap, messages)
        print(f"\nconnector log ({log_path}):")
        print("   " + "\n   ".join(log_path.read_text().strip().splitlines()[-12:]))
        step(f"connector exited with code {code}")
        return code
    finally:
        if connector is not None and connector.poll() is None:
            connector.kill()
        standin.stop()
        broker.stop()
        step("stopped the broker and the stand-in; nothing is left running")


def show_results(standin: UserFluxStandIn, letters: list, bootstrap: str, messages: dict) -> None:
    batches = standin.batches()
    events = standin.events()
    step(
        f"UserFlux received {len(events)} events in {len(batches)} batches "
        f"(sizes {', '.join(str(len(b.events)) for b in batches)})"
    )
    shown = {}
    for batch in batches:
        for event in batch.events:
            shown.setdefault((event["name"], batch.location_enrichment), event)
    for (_name, enrichment), event in shown.items():
        print(f"   e.g. locationEnrichment={str(enrichment).lower()}: {json.dumps(event)}")
    step(f"the dead-letter topic {DEAD_LETTERS} holds {len(letters)} messages:")
    for letter in letters:
        headers = {k: v.decode() for k, v in letter.headers() or []}
        print(
            f"   {headers['userflux.source.topic']}[{headers['userflux.source.partition']}] "
            f"offset {headers['userflux.source.offset']} ({headers['userflux.error.stage']}): "
            f"{headers['userflux.error.reason']}"
        )
    step("committed offsets (group " + GROUP + "):")
    for topic in messages:
        print(f"   {topic}: committed {committed(bootstrap, GROUP, topic, 2)}, end {end_offsets(bootstrap, topic, 2)}")


def step(text: str) -> None:
    print(f"== {text}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
