"""How far the router has written, kept in ClickHouse where a broker restart cannot erase it.

The embedded broker forgets everything when it restarts, so PostgreSQL's replication slot is
the only durable log. Capture may therefore move the slot past a transaction only once that
transaction is in ClickHouse. The router records, after each batch, the end LSN of the last
transaction it has fully written; capture reads it and confirms `min(broker-acked, written)`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from clickhouse_connect.driver.binding import quote_identifier

PROGRESS_TABLE = "cdc_router_progress"


def _table(database: str) -> str:
    return f"{quote_identifier(database)}.{quote_identifier(PROGRESS_TABLE)}"


def ensure_progress_table(client: Any, database: str) -> None:
    """One row per router group; the newest write wins (ReplacingMergeTree by time)."""
    client.command(f"CREATE DATABASE IF NOT EXISTS {quote_identifier(database)}")
    client.command(
        f"CREATE TABLE IF NOT EXISTS {_table(database)} ("
        "`group` String, `end_lsn` UInt64, `updated_at` DateTime64(6, 'UTC')) "
        "ENGINE = ReplacingMergeTree(`updated_at`) ORDER BY `group`"
    )


def write_progress(client: Any, database: str, group: str, end_lsn: int) -> None:
    """Record that every transaction ending at or before `end_lsn` is written."""
    client.insert(
        PROGRESS_TABLE,
        [[group, end_lsn, datetime.now(UTC)]],
        column_names=["group", "end_lsn", "updated_at"],
        column_type_names=["String", "UInt64", "DateTime64(6, 'UTC')"],
        database=database,
    )


def read_progress(client: Any, database: str, group: str) -> int:
    """The end LSN the router group has written up to (0 if it never wrote)."""
    result = client.query(
        # The table name is quoted by quote_identifier; the value is a bound parameter.
        f"SELECT max(`end_lsn`) FROM {_table(database)} FINAL WHERE `group` = {{group:String}}",  # noqa: S608
        parameters={"group": group},
    )
    value = result.result_rows[0][0] if result.result_rows else 0
    return int(value or 0)
