"""Capture's producer: sends each transaction's events and knows when all of them are acked.

Capture is a hot path (one Kafka message per row change), so it produces with librdkafka
(`clients.rdkafka_producer`): kafka-python's pure-Python producer took ~45% of capture's time.
A message timeout short enough that a dead broker surfaces as an error, then capture starts
over from the slot.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaException

from cdc_kit import clients
from cdc_kit.config import Settings
from cdc_kit.contract import OutgoingEvent
from cdc_kit.errors import CdcKitError


class DeliveryError(CdcKitError, RuntimeError):
    """The broker did not take a message; the caller must start over from the slot."""


@dataclass
class _Transaction:
    end_lsn: int
    remaining: int
    error: str | None = None

    def delivered(self, err: Any, _message: Any) -> None:
        """librdkafka's delivery callback for every message of this transaction."""
        if err is not None and self.error is None:
            self.error = str(err)
        self.remaining -= 1


class TransactionProducer:
    """Produce transactions in order; `acked_lsn` is the end LSN of the last fully acked one."""

    def __init__(
        self, settings: Settings, partitions: list[int] | None, client_id: str = "cdc-kit-capture"
    ) -> None:
        """`partitions`: the topic's, as the admin client found them (None: no such topic).
        Asked of the admin client, which is connected already: librdkafka's own metadata
        request costs ~50 ms of every session's start."""
        topic = settings.cdc_topic
        if not partitions:
            raise DeliveryError(f"topic {topic!r} does not exist (yet); it is created at `up`")
        self.topic = topic
        self._producer = clients.rdkafka_producer(settings, **{"client.id": client_id})
        # One partition (embedded mode): pin it. More: the key `<table>:<pk>` picks one.
        self._partition = 0 if partitions == [0] else -1
        self._pending: deque[_Transaction] = deque()
        self.acked_lsn = 0

    def send(self, events: list[OutgoingEvent], end_lsn: int) -> None:
        """Queue one transaction's events (all of them, in order)."""
        txn = _Transaction(end_lsn=end_lsn, remaining=len(events))
        self._pending.append(txn)
        for event in events:
            self._produce(event, txn)

    def _produce(self, event: OutgoingEvent, txn: _Transaction) -> None:
        while True:
            try:
                self._producer.produce(
                    self.topic,
                    value=event.encode(),
                    key=event.key,
                    partition=self._partition,
                    on_delivery=txn.delivered,
                )
                return
            except BufferError:
                self._producer.poll(0.05)  # local queue full: let deliveries drain first
            except KafkaException as exc:
                raise DeliveryError(str(exc)) from exc

    def poll(self) -> int:
        """Serve delivery callbacks; returns the end LSN up to which everything is acked."""
        self._producer.poll(0)
        while self._pending and self._pending[0].remaining == 0:
            txn = self._pending.popleft()
            if txn.error is not None:
                raise DeliveryError(f"the broker did not take a message: {txn.error}")
            self.acked_lsn = max(self.acked_lsn, txn.end_lsn)
        if self._pending and self._pending[0].error is not None:
            raise DeliveryError(f"the broker did not take a message: {self._pending[0].error}")
        return self.acked_lsn

    @property
    def in_flight(self) -> int:
        """Transactions sent but not yet fully acknowledged."""
        return len(self._pending)

    def close(self) -> None:
        """Drop what is not delivered (the slot sends it again) and free librdkafka's threads
        and sockets: a session that ends must not leave its producer behind."""
        self._producer.purge()
        self._producer.poll(0)  # the purged messages' callbacks
        self._producer.close()

    def flush(self, timeout: float = 30.0) -> int:
        """Wait until every queued message is delivered (or failed); returns `poll()`."""
        remaining = self._producer.flush(timeout)
        if remaining:
            raise DeliveryError(f"{remaining} messages still undelivered after {timeout:.0f} s")
        return self.poll()
