"""Dead letters: events the router could not route, parked with the reason, never dropped.

Each dead letter goes to the dead-letter topic (for people and tools that watch Kafka) and to
the warehouse table `local.cdc_dead_letters` (which survives a restart of the memory-only
embedded broker). It keeps the original bytes, the error, the stage where it failed, the time
and where it came from, so it can be replayed once the cause is fixed.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from clickhouse_connect.driver.binding import quote_identifier

DEAD_LETTER_TABLE = "cdc_dead_letters"

#: Where an event failed, in the order an event meets them (lesson 06 has the table):
#: not a change event / no model for its table / does not fit its model / an unchanged TOAST
#: value nobody stored / refused by the warehouse.
Stage = Literal["decode", "lookup", "validate", "enrich", "warehouse"]

#: Bytes of the original kept in a dead-letter *topic* message (the table keeps all of them).
TOPIC_ORIGINAL_LIMIT = 512 * 1024


@dataclass(frozen=True)
class DeadLetter:
    """One parked event and why it was parked."""

    stage: Stage
    error: str
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    failed_at: datetime

    @property
    def id(self) -> str:
        """Stable identity: the same source message always gets the same id."""
        return f"{self.topic}:{self.partition}:{self.offset}"

    def to_message(self, max_original: int = TOPIC_ORIGINAL_LIMIT) -> bytes:
        """The dead-letter topic's JSON: original as text when it is UTF-8, else base64.

        A huge original is cut to `max_original` bytes here (the topic has a message size
        limit); the warehouse table `cdc_dead_letters` keeps every byte for replay.
        """
        try:
            original: dict[str, Any] = {"text": self.value.decode("utf-8")[:max_original]}
        except UnicodeDecodeError:
            original = {"base64": base64.b64encode(self.value[:max_original]).decode("ascii")}
        if len(self.value) > max_original:
            original.update(truncated=True, size=len(self.value))
        body = {
            "error": self.error,
            "stage": self.stage,
            "failed_at": self.failed_at.isoformat(),
            "source": {"topic": self.topic, "partition": self.partition, "offset": self.offset},
            "key": self.key.decode("utf-8", "replace") if self.key is not None else None,
            "original": original,
        }
        return json.dumps(body, ensure_ascii=False).encode()


def dead_letter_table(database: str) -> str:
    """The dead-letter table as a quoted, qualified name."""
    return f"{quote_identifier(database)}.{quote_identifier(DEAD_LETTER_TABLE)}"


#: The table's columns and their ClickHouse types, for its CREATE TABLE and for every insert
#: (an insert that names its types skips clickhouse-connect's DESCRIBE TABLE round trip).
DEAD_LETTER_SCHEMA = {
    "group": "String",
    "id": "String",
    "stage": "LowCardinality(String)",
    "error": "String",
    "topic": "String",
    "partition": "Int32",
    "offset": "Int64",
    "key": "String",
    "value": "String",
    "failed_at": "DateTime64(6, 'UTC')",
    "replayed": "UInt8",
}


def ensure_dead_letter_table(client: Any, database: str) -> None:
    """ReplacingMergeTree by (group, id): a dead letter written twice (a replay) is kept once,
    and each router group parks and replays its own (two groups may read one topic)."""
    table = dead_letter_table(database)
    columns = ", ".join(
        f"{quote_identifier(name)} {kind}" for name, kind in DEAD_LETTER_SCHEMA.items()
    )
    client.command(
        f"CREATE TABLE IF NOT EXISTS {table} ({columns}) "
        "ENGINE = ReplacingMergeTree(`failed_at`) ORDER BY (`group`, `id`)"
    )
    # Tables of older kits had no group (and stay ordered by id alone).
    client.command(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS `group` String FIRST")


def write_dead_letters(
    client: Any, database: str, letters: list[DeadLetter], group: str, replayed: int = 0
) -> None:
    """Park `letters` for `group` (or, with replayed=1, mark them replayed)."""
    if letters:
        client.insert(
            DEAD_LETTER_TABLE,
            _rows(letters, group, replayed),
            column_names=list(DEAD_LETTER_SCHEMA),
            column_type_names=list(DEAD_LETTER_SCHEMA.values()),
            database=database,
        )


def _rows(letters: list[DeadLetter], group: str, replayed: int) -> list[list[Any]]:
    """Rows for `cdc_dead_letters`; the value is stored base64 so any bytes survive."""
    return [
        [
            group,
            letter.id,
            letter.stage,
            letter.error,
            letter.topic,
            letter.partition,
            letter.offset,
            (letter.key or b"").decode("utf-8", "replace"),
            base64.b64encode(letter.value).decode("ascii"),
            letter.failed_at,
            replayed,
        ]
        for letter in letters
    ]
