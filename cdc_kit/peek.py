"""Look at the newest change events on a topic, as a table, without disturbing anyone.

The consumer here has no group, so it commits nothing and the router never notices it.
It reads the topic from the start and keeps the last `limit` events: the embedded broker
answers "where does the topic end?" wrongly (`seek_to_end` then `position()` gave 1 for a
37-message topic), so we do not ask it.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterator
from typing import Any

import pandas as pd
from kafka import TopicPartition


def recent_events(
    stack: Any, limit: int = 10, table: str | None = None, topic: str | None = None
) -> pd.DataFrame:
    """The newest `limit` events (optionally of one table): offset, key, metadata, payload."""
    topic = topic or stack.settings.cdc_topic
    consumer = stack.kafka_consumer()
    newest: deque[dict[str, Any]] = deque(maxlen=limit)
    try:
        consumer.assign([TopicPartition(topic, 0)])
        consumer.seek_to_beginning()
        for record in fetch_all(consumer, timeout_ms=500):
            row = event_row(record)
            if table is None or row["table"] == table:
                newest.append(row)
    finally:
        consumer.close()
    return pd.DataFrame(
        list(newest), columns=["offset", "key", "table", "operation", "lsn", "payload"]
    )


def fetch_all(consumer: Any, timeout_ms: int, max_records: int = 10000) -> Iterator[Any]:
    """Every record the consumer can fetch now, until a poll waits `timeout_ms` in vain."""
    while True:
        batch = consumer.poll(timeout_ms=timeout_ms, max_records=max_records)
        if not batch:
            return
        for records in batch.values():
            yield from records


def event_row(record: Any) -> dict[str, Any]:
    """One topic record as a row: offset, key, metadata, payload (raw bytes if not an event)."""
    try:
        event = json.loads(record.value)
        metadata = event.get("metadata", {})
        payload = event.get("payload")
    except (ValueError, TypeError, AttributeError):
        metadata, payload = {}, record.value  # not a change event: show the raw bytes
    return {
        "offset": record.offset,
        "key": record.key.decode("utf-8", "replace") if record.key else None,
        "table": metadata.get("table"),
        "operation": metadata.get("operation"),
        "lsn": metadata.get("lsn"),
        "payload": payload,
    }
