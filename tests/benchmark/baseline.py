"""The baseline: what a user could write instead of the connector, measured in the same runs.

A quixstreams application doing the connector's job the obvious way: the same mapping in
plain Python, quixstreams' ``BatchingSink`` posting each partition's batch in requests of 50
events with a synchronous ``httpx.Client`` (one thread, or a pool of them), and quixstreams
committing every second after the sink's ``write`` returned. It runs in a virtualenv of its
own (``.venv-baseline``, made by ``make bench``): quixstreams pins an older confluent-kafka
than the connector's.

It keeps none of the connector's guarantees beyond at-least-once on 2xx (no dead letters,
no validation, a non-2xx answer only pauses the partition and reads the batch again), so
it is a floor for what the job costs in Python, not a competitor on features.

    python tests/benchmark/baseline.py --bootstrap HOST:PORT --group G --url URL --threads 8 TOPIC...

The write key comes from ``USERFLUX_API_KEY``.
"""

from __future__ import annotations

import argparse
import os
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

CHUNK = 50  # the API's limit of events per request


def timestamp_ms(value):
    if isinstance(value, (int, float)):
        return round(value * 1000) if value < 10**11 else int(value)
    return round(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1000)


def to_event(value: dict) -> dict:
    event = {
        "name": value["event"],
        "timestamp": timestamp_ms(value["sent_at"]),
        "properties": value.get("properties") or {},
    }
    user_id = (value.get("user") or {}).get("id")
    if user_id is not None:
        event["userId"] = str(user_id)  # UserFlux takes string ids; some trackers send numbers
    if value.get("anonymous_id"):
        event["anonymousId"] = value["anonymous_id"]
    return event


def main() -> None:
    # Imported here, so that the mapping above can be tested without quixstreams installed.
    import httpx
    from quixstreams import Application
    from quixstreams.sinks import BatchingSink, SinkBackpressureError, SinkBatch

    class UserFluxSink(BatchingSink):
        def __init__(self, url: str, api_key: str, threads: int):
            super().__init__()
            self.client = httpx.Client(
                base_url=url,
                headers={"Authorization": f"Bearer {api_key}"},
                timeout=30,
                limits=httpx.Limits(max_connections=threads),
            )
            self.pool = ThreadPoolExecutor(threads) if threads > 1 else None

        def post(self, chunk) -> int:
            response = self.client.post(
                "/event/ingest/batch",
                params={"locationEnrichment": "false"},
                json={"events": [item.value for item in chunk]},
            )
            return response.status_code

        def write(self, batch: SinkBatch) -> None:
            chunks = list(batch.iter_chunks(CHUNK))
            codes = self.pool.map(self.post, chunks) if self.pool else map(self.post, chunks)
            if any(code >= 300 for code in list(codes)):
                raise SinkBackpressureError(retry_after=1.0)

    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("topics", nargs="+")
    args = parser.parse_args()
    app = Application(
        broker_address=args.bootstrap,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        commit_interval=1.0,
        auto_create_topics=False,
    )
    sink = UserFluxSink(args.url, os.environ["USERFLUX_API_KEY"], args.threads)
    for name in args.topics:
        app.dataframe(app.topic(name, value_deserializer="json")).apply(to_event).sink(sink)
    app.run()


if __name__ == "__main__":
    main()
