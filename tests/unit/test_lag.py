"""connector/lag.py: lag per owned partition from watermarks and committed offsets."""

from __future__ import annotations

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from connector import metrics
from connector.lag import LagMonitor, lag_consumer_config
from connector.metrics import PartitionSeries


class FakeConsumer:
    """Watermarks and the group's committed offsets, as a broker would answer."""

    def __init__(self, conf):
        self.conf = conf
        self.marks: dict[tuple[str, int], tuple[int, int]] = {}
        self.group: dict[tuple[str, int], int] = {}
        self.fail = False

    def get_watermark_offsets(self, tp, timeout, cached):
        assert cached is False  # paused partitions fetch nothing: cached marks go stale
        if self.fail:
            raise KafkaException(KafkaError(KafkaError._TRANSPORT))
        return self.marks[(tp.topic, tp.partition)]

    def committed(self, tps, timeout):
        return [TopicPartition(tp.topic, tp.partition, self.group.get((tp.topic, tp.partition), -1001)) for tp in tps]

    def close(self):
        pass


def sample(gauge, topic: str, partition: int) -> float | None:
    for s in gauge.collect()[0].samples:
        if s.labels == {"topic": topic, "partition": str(partition)}:
            return s.value
    return None


def monitor(series: PartitionSeries, reset: str = "earliest") -> tuple[LagMonitor, FakeConsumer]:
    made: list[FakeConsumer] = []

    def factory(conf):
        made.append(FakeConsumer(conf))
        return made[-1]

    mon = LagMonitor(
        {"bootstrap.servers": "b", "group.id": "g", "auto.offset.reset": reset, "group.instance.id": "pod-0"},
        series,
        10,
        factory=factory,
    )
    return mon, made[0]


def test_the_monitor_never_joins_as_the_static_member():
    conf = lag_consumer_config({"group.id": "g", "group.instance.id": "pod-0", "client.id": "c"})
    assert "group.instance.id" not in conf and conf["client.id"] == "c-lag"


def test_lag_counts_from_the_group_s_committed_offset():
    series = PartitionSeries()
    series.add([("lag-a", 0), ("lag-a", 1)])
    mon, consumer = monitor(series)
    consumer.marks = {("lag-a", 0): (0, 100), ("lag-a", 1): (10, 50)}
    consumer.group = {("lag-a", 0): 40}
    mon.refresh()
    assert sample(metrics.consumer_lag, "lag-a", 0) == 60
    assert sample(metrics.committed_offset, "lag-a", 0) == 40
    # Never committed, auto.offset.reset earliest: everything from the low watermark is behind.
    assert sample(metrics.consumer_lag, "lag-a", 1) == 40
    assert sample(metrics.committed_offset, "lag-a", 1) is None


def test_a_partition_never_committed_with_reset_latest_has_no_lag():
    series = PartitionSeries()
    series.add([("lag-b", 0)])
    mon, consumer = monitor(series, reset="latest")
    consumer.marks = {("lag-b", 0): (0, 100)}
    mon.refresh()
    assert sample(metrics.consumer_lag, "lag-b", 0) == 0


def test_our_commits_move_the_lag_at_once_and_late_answers_do_not_move_it_back():
    series = PartitionSeries()
    series.add([("lag-c", 0)])
    mon, consumer = monitor(series)
    consumer.marks = {("lag-c", 0): (0, 100)}
    mon.refresh()
    mon.committed(("lag-c", 0), 90)
    assert (sample(metrics.consumer_lag, "lag-c", 0), sample(metrics.committed_offset, "lag-c", 0)) == (10, 90)
    mon.committed(("lag-c", 0), 70)
    assert sample(metrics.committed_offset, "lag-c", 0) == 90
    consumer.marks = {("lag-c", 0): (0, 130)}
    mon.refresh()
    assert sample(metrics.consumer_lag, "lag-c", 0) == 40


def test_a_revoked_partition_s_series_go_at_once_and_do_not_come_back():
    series = PartitionSeries()
    series.add([("lag-d", 0)])
    mon, consumer = monitor(series)
    consumer.marks = {("lag-d", 0): (0, 100)}
    mon.refresh()
    series.remove([("lag-d", 0)])
    mon.forget([("lag-d", 0)])
    assert sample(metrics.consumer_lag, "lag-d", 0) is None
    assert sample(metrics.oldest_pending_age, "lag-d", 0) is None
    mon.committed(("lag-d", 0), 100)  # a late commit answer for a partition we gave away
    assert sample(metrics.committed_offset, "lag-d", 0) is None


def test_a_broker_that_does_not_answer_leaves_the_last_figures(caplog):
    series = PartitionSeries()
    series.add([("lag-e", 0)])
    mon, consumer = monitor(series)
    consumer.marks = {("lag-e", 0): (0, 100)}
    mon.refresh()
    consumer.fail = True
    mon.refresh()
    mon.refresh()
    assert sample(metrics.consumer_lag, "lag-e", 0) == 100
    assert len([r for r in caplog.records if "consumer lag not refreshed" in r.getMessage()]) == 1


def test_a_late_commit_answer_is_not_remembered_for_a_later_assignment():
    series = PartitionSeries()
    mon, consumer = monitor(series)
    mon.committed(("lag-f", 0), 100)  # answered after the partition was revoked
    series.add([("lag-f", 0)])  # assigned again later; the group moved on meanwhile
    consumer.marks = {("lag-f", 0): (0, 300)}
    consumer.group = {("lag-f", 0): 250}
    mon.refresh()
    assert sample(metrics.committed_offset, "lag-f", 0) == 250
    assert sample(metrics.consumer_lag, "lag-f", 0) == 50
