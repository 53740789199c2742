"""Where the router's records come from: the change topic, read for one consumer group.

A `Source` hands out records after the group's committed offset, and commits only what the
router says it has written: delivery is at least once. It also owns the group's lease: one
router reads a group at a time, and it holds the group only while it works (`take()` ...
`give_back()`), each time from the committed offset, since another router may have read in
between.

`KafkaSource` reads Kafka; `MemorySource` is its twin in memory, so the router's rules are
tested without services (tests/unit).
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field
from typing import Any, Protocol

from confluent_kafka import OFFSET_BEGINNING, KafkaException, TopicPartition

from cdc_kit import clients
from cdc_kit.config import Settings
from cdc_kit.errors import FixableError
from cdc_kit.router.lease import GroupLease
from cdc_kit.router.routing import Record


class Source(Protocol):
    """Records of one partition, for one consumer group, delivered at least once."""

    group: str

    @property
    def held(self) -> bool: ...

    def take(self) -> None:
        """Take the group, positioned at its committed offset (or refuse in one line)."""

    def give_back(self) -> None:
        """Give the group back. The next `take()` starts at the committed offset again."""

    def poll(self, max_records: int, timeout_ms: int) -> list[Record]:
        """The next records, waiting up to `timeout_ms` for the first one."""
        ...

    def restarted(self) -> bool:
        """True once if the topic was lost since the group was taken (a broker restart):
        positions read before mean nothing; reading goes on from the new topic's start."""
        ...

    def rewind(self, offset: int) -> None:
        """Read from `offset` again (a batch that could not be written)."""

    def reset(self) -> None:
        """Forget the position: the next poll starts at the committed offset (after a failure
        whose batch is unknown, e.g. the broker went away mid-poll)."""

    def commit(self, next_offset: int) -> None:
        """The group has routed every record before `next_offset`."""

    def lag(self) -> int | None:
        """Records on the topic after the position (None: not known yet)."""
        ...

    def handover_requested(self) -> dict[str, Any] | None:
        """{"pid", "name"} of another router asking for the group, or None."""
        ...

    def close(self) -> None: ...


#: How long a consumer given back stays open for the same router's next turn.
KEEP_CONSUMER_S = 2.0


class KafkaSource:
    """The change topic in Kafka (librdkafka), partition 0, for one consumer group."""

    def __init__(self, settings: Settings, group: str, hands_over: bool = True) -> None:
        self.settings = settings
        self.group = group
        self.topic = settings.cdc_topic
        self.lease = GroupLease(settings.home, group, hands_over=hands_over)
        self._consumer: Any = None
        self._consumer_lock = threading.Lock()  # take/give back vs. the idle close
        self._idle_close: threading.Timer | None = None
        self._admin: Any = None
        self._cluster_id: str | None = None
        # Offsets after the last record read and after the last commit (None: none since
        # the consumer was opened at the committed offset).
        self._read_up_to: int | None = None
        self._committed_up_to: int | None = None

    @property
    def held(self) -> bool:
        return self.lease.held

    def take(self) -> None:
        with self._consumer_lock:
            self._cancel_idle_close()
            if self._admin is None:
                self._admin = clients.kafka_admin(self.settings)
            self.lease.acquire()
            try:
                if self._consumer is None or not self.lease.undisturbed:
                    self._open_consumer()  # else: nobody read since, still at the commit
            except BaseException:
                self.lease.release()
                raise

    def give_back(self) -> None:
        """Give the group back. Opening a consumer costs tens of milliseconds, too much for
        every `step()` of a loop, so one whose position is the committed offset stays open
        for KEEP_CONSUMER_S: this router's next turn uses it if no other router read in
        between. An idle router then closes it, and holds nothing."""
        with self._consumer_lock:
            if self._consumer is not None and self._read_up_to in (None, self._committed_up_to):
                self._idle_close = threading.Timer(KEEP_CONSUMER_S, self._close_if_idle)
                self._idle_close.daemon = True
                self._idle_close.start()
            else:
                self._drop_consumer()
            self.lease.release()

    def _close_if_idle(self) -> None:
        with self._consumer_lock:
            if not self.lease.held:
                self._drop_consumer()

    def _cancel_idle_close(self) -> None:
        if self._idle_close is not None:
            self._idle_close.cancel()
            self._idle_close = None

    def _open_consumer(self) -> None:
        """A fresh consumer at the group's committed offset (the start, if none)."""
        self._drop_consumer()
        cluster = clients.cluster_id(self._admin)
        # Asked of the admin client, connected already (librdkafka's metadata request: ~30 ms).
        if not clients.topic_partitions(self._admin, self.topic):
            raise FixableError(f"topic {self.topic!r} does not exist (yet); it is made at `up`")
        consumer = clients.rdkafka_consumer(self.settings, self.group)
        try:
            committed = consumer.committed([TopicPartition(self.topic, 0)], timeout=10)[0]
            start = committed.offset if committed.offset >= 0 else OFFSET_BEGINNING
            consumer.assign([TopicPartition(self.topic, 0, start)])
        except BaseException:
            consumer.close()
            raise
        self._cluster_id = cluster
        self._consumer = consumer
        self._read_up_to = self._committed_up_to = None

    def _drop_consumer(self) -> None:
        if self._consumer is not None:
            with contextlib.suppress(KafkaException, RuntimeError):  # a broken one may not close
                self._consumer.close()
        self._consumer = None

    def poll(self, max_records: int, timeout_ms: int) -> list[Record]:
        if self._consumer is None:  # after a failed batch: start again from the commit
            self._open_consumer()
        first = self._consumer.poll(timeout_ms / 1000)
        if first is None:
            return []
        messages = [first, *self._consumer.consume(max_records - 1, timeout=0)]
        records = []
        for message in messages:
            error = message.error()
            if error is not None:
                raise KafkaException(error)
            records.append(
                Record(
                    message.topic(),
                    message.partition(),
                    message.offset(),
                    message.key(),
                    message.value(),
                )
            )
        self._read_up_to = records[-1].offset + 1
        return records

    def restarted(self) -> bool:
        """Compare the broker's cluster id (unique per start) with the one we began with.

        Asked before every poll and every commit: an old consumer on a restarted broker keeps
        its old offset N, reads the new topic from N and may commit there, which would make
        offsets 0..N-1 of the new topic be skipped for good. (kafka-python's DescribeCluster
        answers in ~0.5 ms here; librdkafka's metadata request took ~20 ms.)
        """
        if self._consumer is None or clients.cluster_id(self._admin) == self._cluster_id:
            return False
        self._open_consumer()  # the new topic has no commits: from its start
        return True

    def rewind(self, offset: int) -> None:
        try:
            self._consumer.seek(TopicPartition(self.topic, 0, offset))
            self._read_up_to = offset
        except KafkaException:
            self._drop_consumer()  # a fresh consumer starts at the committed offset

    def reset(self) -> None:
        self._drop_consumer()

    def commit(self, next_offset: int) -> None:
        self._consumer.commit(
            offsets=[TopicPartition(self.topic, 0, next_offset)], asynchronous=False
        )
        self._committed_up_to = next_offset

    def lag(self) -> int | None:
        """From the last fetch's high watermark: Tansu's 'latest offset' answer is wrong."""
        if self._consumer is None:
            return None
        partition = TopicPartition(self.topic, 0)
        try:
            _, high = self._consumer.get_watermark_offsets(partition, cached=True)
            position = self._consumer.position([partition])[0].offset
        except KafkaException:
            return None
        if high < 0 or position is None or position < 0:
            return None
        return max(0, high - position)

    def handover_requested(self) -> dict[str, Any] | None:
        return self.lease.handover_requested() if self.lease.hands_over else None

    def close(self) -> None:
        self.give_back()
        with self._consumer_lock:
            self._cancel_idle_close()
            self._drop_consumer()
        if self._admin is not None:
            self._admin.close()
            self._admin = None


@dataclass
class MemoryTopic:
    """A one-partition topic and its groups' committed offsets, as a broker keeps them."""

    name: str = "changes"
    records: list[Record] = field(default_factory=list)
    committed: dict[str, int] = field(default_factory=dict)
    holders: dict[str, MemorySource] = field(default_factory=dict)
    handover_asks: dict[str, dict[str, Any]] = field(default_factory=dict)
    generation: int = 0

    def append(self, *values: bytes | None, key: bytes | None = None) -> None:
        for value in values:
            self.records.append(Record(self.name, 0, len(self.records), key, value))

    def restart(self) -> None:
        """What the memory-only broker does when it restarts: every message and commit gone."""
        self.records = []
        self.committed = {}
        self.generation += 1


class MemorySource:
    """The in-memory twin of `KafkaSource`: same rules, a `MemoryTopic` for a broker."""

    def __init__(self, topic: MemoryTopic, group: str = "router") -> None:
        self.topic = topic
        self.group = group
        self.position: int | None = None
        self._generation = topic.generation

    @property
    def held(self) -> bool:
        return self.topic.holders.get(self.group) is self

    def take(self) -> None:
        holder = self.topic.holders.get(self.group)
        if holder is not None and holder is not self:
            raise FixableError(f"router group {self.group!r} is held by another router")
        self.topic.holders[self.group] = self
        self.position = self.topic.committed.get(self.group, 0)
        self._generation = self.topic.generation

    def give_back(self) -> None:
        if self.held:
            del self.topic.holders[self.group]
        self.position = None

    def poll(self, max_records: int, timeout_ms: int) -> list[Record]:
        assert self.position is not None, "poll() without take()"
        records = self.topic.records[self.position : self.position + max_records]
        self.position += len(records)
        return records

    def restarted(self) -> bool:
        if self._generation == self.topic.generation:
            return False
        self._generation = self.topic.generation
        self.position = 0
        return True

    def rewind(self, offset: int) -> None:
        self.position = offset

    def reset(self) -> None:
        self.position = self.topic.committed.get(self.group, 0)

    def commit(self, next_offset: int) -> None:
        self.topic.committed[self.group] = next_offset

    def lag(self) -> int | None:
        return None if self.position is None else len(self.topic.records) - self.position

    def handover_requested(self) -> dict[str, Any] | None:
        return self.topic.handover_asks.get(self.group)

    def close(self) -> None:
        self.give_back()
