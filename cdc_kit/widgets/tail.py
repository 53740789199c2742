"""The newest events on the change topic, read incrementally for a panel that refreshes often."""

from __future__ import annotations

import json
from collections import deque
from typing import Any

import pandas as pd

from cdc_kit.peek import event_row, fetch_all


class TopicTail:
    """The newest events on the change topic, read incrementally (no consumer group).

    It reads the topic once from the start, then only what is new at each `read()`: cheap
    enough for a panel that refreshes every second.
    """

    def __init__(self, stack: Any, keep: int = 50) -> None:
        from kafka import TopicPartition

        self.consumer = stack.kafka_consumer()
        self.consumer.assign([TopicPartition(stack.settings.cdc_topic, 0)])
        self.consumer.seek_to_beginning()
        self.events: deque[dict[str, Any]] = deque(maxlen=keep)

    def read(self, limit: int = 5) -> pd.DataFrame:
        records = fetch_all(self.consumer, timeout_ms=30, max_records=5000)
        self.events.extend(_short_row(record) for record in records)
        rows = list(self.events)[-limit:]
        return pd.DataFrame(rows, columns=["offset", "table", "operation", "lsn", "payload"])

    def close(self) -> None:
        self.consumer.close()


def _short_row(record: Any) -> dict[str, Any]:
    """A topic record as a row of the panel: its payload as JSON text, cut to 90 characters."""
    row = event_row(record)
    text = json.dumps(row.pop("payload"), default=str)
    row.pop("key")
    return {**row, "payload": text if len(text) <= 90 else text[:87] + "..."}
