"""The benchmark's data: web events of a realistic shape, preloaded or produced at a steady rate.

Each message is the JSON a web or app tracker sends (about 300 to 400 bytes): an event
name, a type, a user (one of a few thousand, or only an anonymous device), a ``sent_at``
time in one of the forms senders use (epoch milliseconds, epoch seconds with a fraction,
ISO-8601 with ``Z`` or with an offset) and nested properties (page, device, campaign,
product or order). The key is the user or device id, as trackers key their messages.

``sent_at`` always carries milliseconds, and it is also the Kafka timestamp: the mapped
event's ``timestamp`` therefore equals the Kafka timestamp, which lets the sink measure
"Kafka timestamp to 2xx" from the event alone.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone

from confluent_kafka import Producer

from tests.benchmark.errors import BenchError

USERS = 5_000
ANONYMOUS_SHARE = 0.2  # events from visitors who have not signed in: anonymous_id only
FILTERED_TYPE = "debug"  # the type scenario (d)'s where: filter leaves out
FULL_QUEUE_POLLS = 1_200  # 60 s of a full producer queue: the broker is not taking anything
Encode = Callable[[dict, int], bytes]  # (the event, its epoch milliseconds) -> the message value

# (name, type, weight): what a shop's tracker sends, in rough proportions.
KINDS = (
    ("page_view", "page", 30),
    ("screen_view", "screen", 10),
    ("product_viewed", "track", 15),
    ("search", "track", 8),
    ("add_to_cart", "track", 10),
    ("checkout_started", "track", 5),
    ("order_completed", "track", 4),
    ("signup", "track", 2),
    ("video_played", "track", 6),
    ("client_trace", FILTERED_TYPE, 5),
)
_NAMES = [k[0] for k in KINDS]
_TYPES = {k[0]: k[1] for k in KINDS}
_WEIGHTS = [k[2] for k in KINDS]

_PATHS = ("/", "/pricing", "/products/shoes", "/products/bags", "/cart", "/checkout", "/blog/launch", "/account")
_REFERRERS = (None, None, "https://www.google.com/", "https://t.co/x1", "https://mail.example.org/")
_DEVICES = (
    ("desktop", "macOS", "Chrome"),
    ("desktop", "Windows", "Edge"),
    ("mobile", "iOS", "Safari"),
    ("mobile", "Android", "Chrome"),
    ("tablet", "iPadOS", "Safari"),
)
_CAMPAIGNS = (None, None, None, ("newsletter", "email", "black-friday"), ("google", "cpc", "brand"))
_PRODUCTS = (
    ("SKU-1042", "Trail Runner", "shoes", 129.9),
    ("SKU-2210", "Weekender", "bags", 89.0),
    ("SKU-3301", "Rain Shell", "jackets", 159.5),
    ("SKU-4187", "Wool Socks", "accessories", 14.99),
)
_PLANS = ("free", "pro", "team")
_OFFSETS = (timezone(timedelta(hours=2)), timezone(timedelta(hours=-5)), timezone(timedelta(hours=5, minutes=30)))


def sent_at(ms: int, form: int) -> int | float | str:
    """``ms`` (epoch milliseconds) written in one of the four forms senders use."""
    if form == 0:
        return ms
    if form == 1:
        return round(ms / 1000, 3)  # epoch seconds, as time.time() gives them
    when = datetime.fromtimestamp(ms / 1000, tz=UTC)
    if form == 2:
        return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return when.astimezone(_OFFSETS[ms % len(_OFFSETS)]).isoformat(timespec="milliseconds")


class EventFactory:
    """Makes messages (key, value); deterministic for a seed."""

    def __init__(self, seed: int = 8):
        self.rng = random.Random(seed)

    def message(self, ms: int) -> tuple[bytes, bytes, str]:
        """(key, JSON value, type) of one event sent at ``ms``."""
        key, doc, kind = self.record(ms)
        return key, json.dumps(doc, separators=(",", ":")).encode(), kind

    def record(self, ms: int) -> tuple[bytes, dict, str]:
        """(key, the event as a dict, type) of one event sent at ``ms``."""
        rng = self.rng
        name = rng.choices(_NAMES, _WEIGHTS)[0]
        kind = _TYPES[name]
        device = rng.choice(_DEVICES)
        anonymous_id = f"anon-{rng.getrandbits(48):012x}"
        doc: dict = {"event": name, "type": kind}
        if rng.random() >= ANONYMOUS_SHARE:
            uid = rng.randrange(USERS)
            # Some trackers send numeric ids, others strings.
            doc["user"] = {"id": uid if uid % 3 == 0 else f"usr_{uid:06d}", "plan": _PLANS[uid % 3]}
            key = str(uid).encode()
        else:
            key = anonymous_id.encode()
        doc["anonymous_id"] = anonymous_id
        doc["sent_at"] = sent_at(ms, rng.randrange(4))
        page = {"path": rng.choice(_PATHS)}
        referrer = rng.choice(_REFERRERS)
        if referrer is not None:
            page["referrer"] = referrer
        properties: dict = {
            "page": page,
            "context": {
                "device": {"type": device[0], "os": device[1], "browser": device[2]},
                "locale": rng.choice(("en-US", "de-DE", "fr-FR")),
                "library": "tracker-js/3.4.1",
            },
        }
        campaign = rng.choice(_CAMPAIGNS)
        if campaign is not None:
            properties["campaign"] = {"source": campaign[0], "medium": campaign[1], "name": campaign[2]}
        if name in ("product_viewed", "add_to_cart"):
            sku, title, category, price = rng.choice(_PRODUCTS)
            properties["product"] = {
                "sku": sku,
                "name": title,
                "category": category,
                "price": price,
                "quantity": rng.randint(1, 3),
            }
        elif name in ("checkout_started", "order_completed"):
            items = rng.sample(_PRODUCTS, rng.randint(1, 2))
            properties["order"] = {
                "id": f"ord_{rng.getrandbits(32):08x}",
                "currency": "EUR",
                "total": round(sum(p[3] for p in items), 2),
                "skus": [p[0] for p in items],
            }
        elif name == "search":
            properties["search"] = {
                "query": rng.choice(("running shoes", "rain jacket", "gift")),
                "results": rng.randint(0, 80),
            }
        elif name == "video_played":
            properties["video"] = {"id": f"vid_{rng.randrange(300)}", "position_s": rng.randint(0, 600)}
        doc["properties"] = properties
        return key, doc, kind


@dataclass
class Produced:
    """What was produced: how many messages of each type, and their size."""

    types: Counter = field(default_factory=Counter)
    bytes: int = 0

    @property
    def count(self) -> int:
        return sum(self.types.values())

    def passing(self, excluded: str = FILTERED_TYPE) -> int:
        """How many messages a where: filter that leaves out ``excluded`` keeps."""
        return self.count - self.types[excluded]

    def add(self, value: bytes, kind: str) -> None:
        self.types[kind] += 1
        self.bytes += len(value)


class _Sending:
    """A producer tuned for throughput (large batches, lz4); delivery errors fail the run."""

    def __init__(self, bootstrap: str, linger_ms: int):
        self.producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "linger.ms": linger_ms,
                "batch.size": 1_000_000,
                "compression.type": "lz4",
                "queue.buffering.max.messages": 500_000,
                "queue.buffering.max.kbytes": 512 * 1024,
            }
        )
        self.errors: list = []
        self.produced = Produced()

    def send(self, topic: str, key: bytes, value: bytes, kind: str, timestamp_ms: int = 0) -> None:
        for _ in range(FULL_QUEUE_POLLS):
            try:
                self.producer.produce(topic, value=value, key=key, timestamp=timestamp_ms, on_delivery=self._delivered)
                break
            except BufferError:  # the local queue is full: let it drain
                self.producer.poll(0.05)
        else:
            raise BenchError(
                f"the broker took nothing for {FULL_QUEUE_POLLS * 0.05:.0f} s: producing failed "
                f"({self.errors or 'no error reported'})"
            )
        self.produced.add(value, kind)

    def _delivered(self, error, _message) -> None:
        if error is not None and len(self.errors) < 10:
            self.errors.append(error)

    def finish(self, timeout_s: float) -> Produced:
        remaining = self.producer.flush(timeout_s)
        if remaining or self.errors:
            raise BenchError(f"producing failed: {self.errors} ({remaining} messages not acknowledged)")
        return self.produced


def preload(
    bootstrap: str, topic: str, count: int, seed: int = 8, timeout_s: float = 600, encode: Encode | None = None
) -> Produced:
    """Produce ``count`` events to ``topic`` as fast as the broker takes them; ``encode``
    writes each (default: JSON)."""
    sending = _Sending(bootstrap, linger_ms=50)
    factory = EventFactory(seed)
    deadline = time.monotonic() + timeout_s
    now_ms = int(time.time() * 1000)
    for i in range(count):
        ms = now_ms - (count - i) // 100  # sent over the last moments
        key, value, kind = _encoded(factory, ms, encode)
        sending.send(topic, key, value, kind)
        if i % 10_000 == 0:
            sending.producer.poll(0)
            if time.monotonic() > deadline:
                raise BenchError(f"preloading {count} events took longer than {timeout_s:.0f} s")
    return sending.finish(max(1.0, deadline - time.monotonic()))


def _encoded(factory: EventFactory, ms: int, encode: Encode | None) -> tuple[bytes, bytes, str]:
    if encode is None:
        return factory.message(ms)
    key, doc, kind = factory.record(ms)
    return key, encode(doc, ms), kind


def produce_at_rate(
    bootstrap: str, topic: str, rate: int, seconds: float, seed: int = 9, encode: Encode | None = None
) -> Produced:
    """Produce ``rate`` events a second for ``seconds``, each stamped with the time it is produced.

    Events go out every 10 ms in equal shares, with the default producer linger, as a
    tracker's backend would send them.
    """
    sending = _Sending(bootstrap, linger_ms=5)
    factory = EventFactory(seed)
    tick_s = 0.01
    total = int(rate * seconds)
    started = time.monotonic()
    sent = 0
    while sent < total:
        due = min(total, int((time.monotonic() - started) * rate) + 1)
        while sent < due:
            ms = int(time.time() * 1000)
            key, value, kind = _encoded(factory, ms, encode)
            sending.send(topic, key, value, kind, timestamp_ms=ms)
            sent += 1
        sending.producer.poll(0)
        next_tick = started + (sent / rate)
        pause = next_tick - time.monotonic()
        if pause > 0:
            time.sleep(min(pause, tick_s))
    return sending.finish(30.0)


# -- the same events in Avro (scenario (v)), as a producer with a schema would write them ----


def _optional(record: dict) -> list:
    return ["null", record]


def _record(name: str, *fields: tuple[str, object]) -> dict:
    return {"type": "record", "name": name, "fields": [{"name": n, "type": t} for n, t in fields]}


def _nullable(name: str, record: dict) -> dict:
    return {"name": name, "type": _optional(record), "default": None}


AVRO_SCHEMA = {
    "type": "record",
    "name": "WebEvent",
    "namespace": "com.example.tracking",
    "fields": [
        {"name": "event", "type": "string"},
        {"name": "type", "type": "string"},
        {
            "name": "user",
            "type": _optional(_record("User", ("id", ["long", "string"]), ("plan", "string"))),
            "default": None,
        },
        {"name": "anonymous_id", "type": "string"},
        {"name": "sent_at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {
            "name": "properties",
            "type": {
                "type": "record",
                "name": "Properties",
                "fields": [
                    {"name": "page", "type": _record("Page", ("path", "string"), ("referrer", ["null", "string"]))},
                    {
                        "name": "context",
                        "type": _record(
                            "Context",
                            ("device", _record("Device", ("type", "string"), ("os", "string"), ("browser", "string"))),
                            ("locale", "string"),
                            ("library", "string"),
                        ),
                    },
                    _nullable(
                        "campaign", _record("Campaign", ("source", "string"), ("medium", "string"), ("name", "string"))
                    ),
                    _nullable(
                        "product",
                        _record(
                            "Product",
                            ("sku", "string"),
                            ("name", "string"),
                            ("category", "string"),
                            ("price", "double"),
                            ("quantity", "int"),
                        ),  # fmt: skip
                    ),
                    _nullable(
                        "order",
                        _record(
                            "Order",
                            ("id", "string"),
                            ("currency", "string"),
                            ("total", "double"),
                            ("skus", {"type": "array", "items": "string"}),
                        ),  # fmt: skip
                    ),
                    _nullable("search", _record("Search", ("query", "string"), ("results", "int"))),
                    _nullable("video", _record("Video", ("id", "string"), ("position_s", "int"))),
                ],
            },
        },
    ],
}


def avro_record(doc: dict, ms: int) -> dict:
    """``doc`` as the Avro record of AVRO_SCHEMA: ``sent_at`` in epoch milliseconds, the
    optional parts null where the JSON leaves them out."""
    props = doc["properties"]
    page = props["page"]
    return {
        **doc,
        "user": doc.get("user"),
        "sent_at": ms,
        "properties": {
            **{k: props.get(k) for k in ("campaign", "product", "order", "search", "video")},
            "page": {"path": page["path"], "referrer": page.get("referrer")},
            "context": props["context"],
        },
    }


def avro_encoder(registry_url: str, topic: str):
    """encode(doc, ms) -> the value confluent-kafka's AvroSerializer writes (registering the schema)."""
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.avro import AvroSerializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    serializer = AvroSerializer(SchemaRegistryClient({"url": registry_url, "timeout": 10}), json.dumps(AVRO_SCHEMA))
    context = SerializationContext(topic, MessageField.VALUE)
    return lambda doc, ms: serializer(avro_record(doc, ms), context)
