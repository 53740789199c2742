"""The initial snapshot: rows that existed before capture first started, as `read` events.

When capture creates its slot through the replication protocol, PostgreSQL exports a snapshot
that matches the slot's starting point exactly. Reading the tables inside that snapshot and
then streaming from the slot gives every row once: no gap and no duplicate at the hand-off.
Snapshot rows carry lsn "0/0", so any streamed change of the same row wins in ClickHouse.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from psycopg2 import sql

from cdc_kit.contract import OutgoingEvent, build_event

STATE_SCHEMA = "cdc_kit"
STATE_TABLE = "snapshot_state"


def ensure_state_table(conn: Any) -> None:
    """A small table outside `public` (so it is never published) that remembers snapshots."""
    with conn.cursor() as cur:
        cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(STATE_SCHEMA)))
        cur.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {}.{} (slot_name text PRIMARY KEY, "
                "consistent_point pg_lsn, done boolean NOT NULL DEFAULT false, "
                "rows bigint, finished_at timestamptz)"
            ).format(sql.Identifier(STATE_SCHEMA), sql.Identifier(STATE_TABLE))
        )
    conn.commit()


def snapshot_state(conn: Any, slot: str) -> tuple[bool, str] | None:
    """(done, consistent point) of the slot's snapshot, or None if never started here."""
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL("SELECT done, consistent_point::text FROM {}.{} WHERE slot_name = %s").format(
                sql.Identifier(STATE_SCHEMA), sql.Identifier(STATE_TABLE)
            ),
            (slot,),
        )
        row = cur.fetchone()
    conn.commit()
    return None if row is None else (bool(row[0]), str(row[1]))


def mark_snapshot(conn: Any, slot: str, consistent_point: str, done: bool, rows: int = 0) -> None:
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL(
                "INSERT INTO {}.{} (slot_name, consistent_point, done, rows, finished_at) "
                "VALUES (%s, %s, %s, %s, CASE WHEN %s THEN now() END) ON CONFLICT (slot_name) "
                "DO UPDATE SET consistent_point = EXCLUDED.consistent_point, done = EXCLUDED.done, "
                "rows = EXCLUDED.rows, finished_at = EXCLUDED.finished_at"
            ).format(sql.Identifier(STATE_SCHEMA), sql.Identifier(STATE_TABLE)),
            (slot, consistent_point, done, rows, done),
        )
    conn.commit()


def read_snapshot(
    conn: Any,
    snapshot_name: str | None,
    tables: list[tuple[str, str]],
    primary_key: Callable[[str, str], list[str]],
    batch_size: int = 5000,
) -> Iterator[OutgoingEvent]:
    """Yield a `read` event for every row of `tables`, as of one consistent snapshot.

    `snapshot_name`: the slot's exported snapshot (the first time), or None for a fresh one
    (a retake: correct as long as the slot still holds every change since its start,
    because snapshot rows have version 0 and every streamed change outranks them).
    """
    conn.autocommit = False
    with conn.cursor() as cur:
        cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        if snapshot_name is not None:
            cur.execute("SET TRANSACTION SNAPSHOT %s", (snapshot_name,))
    for schema, table in tables:
        keys = primary_key(schema, table)
        with conn.cursor(name=f"snapshot_{table}") as cur:  # server-side: rows in batches
            cur.itersize = batch_size
            cur.execute(
                sql.SQL("SELECT * FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(table))
            )
            columns: list[str] | None = None
            for row in cur:
                if columns is None:
                    columns = [desc.name for desc in cur.description]
                yield build_event(
                    table,
                    "read",
                    dict(zip(columns, row, strict=True)),
                    lsn=0,
                    key_columns=keys,
                    schema=schema,
                    snapshot=snapshot_name or "retake",
                )
    conn.commit()
