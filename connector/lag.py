"""Consumer lag per owned partition, asked of the brokers in a thread of its own.

Lag is the partition's high watermark minus the group's committed offset. The high
watermark is asked for, not taken from fetch responses: a partition paused by
backpressure fetches nothing, and its lag must keep growing while UserFlux is down.
These are broker round trips, so they run here, on a consumer handle of their own that
never joins the group, and never on the pipeline thread.

The committed offset is ours once we have committed in this assignment (the pipeline
reports every commit the broker acknowledged); before that it is the group's, asked of
the broker; a partition the group never committed starts where ``auto.offset.reset``
says, so that is where its lag counts from.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from . import metrics
from .kafka import Key
from .logs import RateLimitedLog, redact
from .metrics import PartitionSeries
from .threads import daemon_thread

log = logging.getLogger("connector.lag")

_FROM_START = {"smallest", "earliest", "beginning"}
TIMEOUT_S = 5.0  # one broker request; a slow cluster makes the figure late, not wrong


def lag_consumer_config(props: dict[str, str]) -> dict[str, Any]:
    conf: dict[str, Any] = {k: v for k, v in props.items() if k != "group.instance.id"}
    conf["enable.auto.commit"] = "false"
    conf["client.id"] = conf.get("client.id", "userflux-connector") + "-lag"
    return conf


class LagMonitor:
    def __init__(
        self,
        props: dict[str, str],
        series: PartitionSeries,
        interval_s: float,
        factory: Callable[[dict], Any] = Consumer,
    ):
        self.series = series
        self.interval_s = interval_s
        self.from_start = props.get("auto.offset.reset", "largest").lower() in _FROM_START
        self._lock = threading.Lock()
        self._committed: dict[Key, int] = {}  # the committed offset: acknowledged to us, or the group's
        self._high: dict[Key, int] = {}
        self._stop = threading.Event()
        self._errors = RateLimitedLog(log, burst=1, period_s=300)
        self.consumer = factory({**lag_consumer_config(props), "logger": logging.getLogger("connector.librdkafka")})
        self._thread = daemon_thread(self._run, "lag-monitor")

    def start(self) -> LagMonitor:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(TIMEOUT_S)
        try:
            self.consumer.close()
        except (KafkaException, RuntimeError):
            pass

    # -- from the pipeline thread ----------------------------------------------------------

    def committed(self, key: Key, offset: int) -> None:
        """The broker acknowledged our commit of ``offset`` for ``key``."""
        if not self.series.owns(key):
            return  # a late answer for a partition given away: the next owner's business
        with self._lock:
            if offset <= self._committed.get(key, -1):
                return  # an older answer arriving late
            self._committed[key] = offset
            high = self._high.get(key)
        self.series.set(metrics.committed_offset, key, offset)
        if high is not None:
            self.series.set(metrics.consumer_lag, key, max(0, high - offset))

    def forget(self, keys: list[Key]) -> None:
        """Revoked or lost: the next owner's commits are not ours to report."""
        with self._lock:
            for key in keys:
                self._committed.pop(key, None)
                self._high.pop(key, None)

    # -- the monitor's own thread ----------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.refresh()
            except Exception:  # a bug here must not take the process down
                log.exception("consumer lag refresh failed")

    def refresh(self) -> None:
        keys = self.series.owned()
        if not keys:
            return
        try:
            # 1. Both watermarks of each partition (ListOffsets; librdkafka asks per partition).
            marks = {
                k: self.consumer.get_watermark_offsets(TopicPartition(*k), timeout=TIMEOUT_S, cached=False)
                for k in keys
            }
            # 2. The group's committed offsets, for partitions we have not committed ourselves.
            with self._lock:
                ask = [k for k in keys if k not in self._committed]
            group: dict[Key, int] = {}
            if ask:
                answer = self.consumer.committed([TopicPartition(*k) for k in ask], timeout=TIMEOUT_S)
                group = {(p.topic, p.partition): p.offset for p in answer if p.error is None and p.offset >= 0}
        except KafkaException as exc:
            self._errors.log(logging.WARNING, "consumer lag not refreshed: %s", redact(str(exc)))
            return
        # 3. Lag from the committed offset, or from where auto.offset.reset starts.
        for key, (low, high) in marks.items():
            with self._lock:
                if key in group:
                    self._committed.setdefault(key, group[key])
                committed = self._committed.get(key)
                self._high[key] = high
            if committed is not None:
                self.series.set(metrics.committed_offset, key, committed)
                base = committed
            else:
                base = low if self.from_start else high
            self.series.set(metrics.consumer_lag, key, max(0, high - max(base, low)))
