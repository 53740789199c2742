"""Checks of lesson 10: each exhibit's fix, the prediction of exhibit 1, and the exercise (the
TOAST repair at the source, proved by PostgreSQL == ClickHouse after a migration the check runs)."""

from __future__ import annotations

from typing import Any

from clickhouse_connect.driver.binding import quote_identifier

from cdc_kit import reconcile, replication
from cdc_kit.checks.common import (
    CheckFailed,
    as_yes_no,
    judge_prediction,
    ordered_by,
    passed,
    self_check,
    show_solution,
    table_order,
    topic_events,
    wait_for,
)
from cdc_kit.lsn import str_to_lsn
from cdc_kit.replication import slot_health


# ---- the exhibits' fixes (they must pass in every run: they check the kit) ---------------------
def same_as_source(stack: Any, table: str, registry: dict[str, type]) -> None:
    """ClickHouse FINAL holds exactly PostgreSQL's rows of `table` (reconcile.compare)."""
    diffs = reconcile.compare(
        stack.pg_engine(), stack.clickhouse(), tables=[table], registry=registry,
        database=stack.settings.clickhouse_database,
    )  # fmt: skip
    if diffs:
        diff = diffs[table]
        raise CheckFailed(
            f"ClickHouse FINAL differs from PostgreSQL: {diff}; missing {diff.missing[:5]}, "
            f"extra {diff.extra[:5]}, changed {list(diff.changed)[:5]}",
            "route what PostgreSQL committed (router.catch_up()) and run the fix cell again",
        )
    passed(f"{table}: ClickHouse FINAL holds exactly PostgreSQL's rows")


def sorted_by_primary_key(ch: Any, database: str, table: str, key: str = "id") -> None:
    """The ClickHouse table's sorting key (ORDER BY) is the source primary key."""
    order = table_order(ch, database, table)
    if order is None or not ordered_by(order[1], key):
        shown = order[1] if order else "no table"
        raise CheckFailed(
            f"{table} is sorted by ({shown}), not by its primary key ({key})",
            "create the table from the model (router.register), which refuses any other key",
        )
    passed(f"{table} is ORDER BY {key}: a delete marker now replaces the row it deletes")


def snapshot_then_stream(
    snapshot_ids: list[int], streamed_ids: list[int], source_ids: list[int]
) -> None:
    """Snapshot rows plus streamed rows give every source row exactly once."""
    overlap = sorted(set(snapshot_ids) & set(streamed_ids))
    if overlap:
        raise CheckFailed(f"rows {overlap} arrived twice: by the snapshot and by the slot")
    missing = sorted(set(source_ids) - set(snapshot_ids) - set(streamed_ids))
    if missing:
        raise CheckFailed(f"rows {missing} arrived neither by the snapshot nor by the slot")
    passed(
        f"{len(snapshot_ids)} rows from the snapshot + {len(streamed_ids)} from the slot = "
        f"all {len(source_ids)} rows, each once"
    )


def capture_slot_safe(conn: Any, slot: str, setting_before: str, gone: str) -> None:
    """The capture's slot is valid, the server-wide setting is back, the idle slot is gone."""
    with conn.cursor() as cur:
        cur.execute("SHOW max_slot_wal_keep_size")
        setting = cur.fetchone()[0]
    status = {h.slot_name: h.wal_status for h in slot_health(conn) if h.slot_name in (slot, gone)}
    if setting != setting_before:
        raise CheckFailed(
            f"max_slot_wal_keep_size is {setting}, not {setting_before} as before the exhibit",
            f"ALTER SYSTEM SET max_slot_wal_keep_size = '{setting_before}' (or ALTER SYSTEM "
            "RESET max_slot_wal_keep_size); SELECT pg_reload_conf()",
        )
    if status.get(slot) not in ("reserved", "extended"):
        raise CheckFailed(f"the capture's slot {slot} is {status.get(slot) or 'missing'}")
    if gone in status:
        raise CheckFailed(f"the invalidated slot {gone} still exists: drop it")
    passed(
        f"{slot} is {status[slot]}, max_slot_wal_keep_size is {setting} as before, and the "
        f"idle slot {gone} is dropped"
    )


# ---- the prediction of exhibit 1 ---------------------------------------------------------------
def reveal_ghost(prediction: Any, ada_in_final: bool) -> None:
    """Feedback on `predicted_ghost`: does FINAL still show Ada after her delete was routed?"""
    judge_prediction(
        prediction,
        ada_in_final,
        name="predicted_ghost",
        normalise=as_yes_no,
        why=(
            "ReplacingMergeTree replaces rows whose ORDER BY key is equal. Ada's row has the "
            "key ('US', 1); her delete marker carries only the id, with '' in country, so its "
            "key is ('', 1). Two keys, two rows: FINAL hides the delete marker and keeps Ada."
        ),
        wrong={
            False: (
                "You expected the delete marker to replace Ada's row, as it does in lesson 07. "
                "It would if both rows had the same ORDER BY key; here the key includes "
                "country, and a delete event does not carry it."
            ),
        },
    )


# ---- the exercise: the TOAST repair at the source -----------------------------------------------
NOTE_COLUMNS = ["id", "title", "body", "is_deleted", "lsn"]

NOTHING_HINTS = (
    "What does PostgreSQL write to the WAL for an UPDATE that does not touch a TOASTed column?",
    "Exhibit 2 names the source-side fix: a per-table setting that makes PostgreSQL log the "
    "whole old row (look for REPLICA IDENTITY).",
    "Re-run the cell that makes the notes table, apply the setting to that table with "
    "ALTER TABLE, then run this check.",
)
WRONG_TABLE_HINTS = (
    "Which table does the migration change, and which one did you alter?",
    "REPLICA IDENTITY is set per table: re-run the cell that makes the notes table, alter "
    "that one, then run this check.",
)
TOO_LATE_HINTS = (
    "When does REPLICA IDENTITY take effect: for changes already in the WAL, or only for "
    "later ones?",
    "Re-run the cell that makes the notes table (a fresh one), apply your fix, and only then "
    "run this check, which runs the migration.",
)


def _pg_notes(conn: Any, table: str) -> dict[int, tuple[str, str]]:
    with conn.cursor() as cur:
        cur.execute(f"SELECT id, title, body FROM {_pg_name(table)}")  # noqa: S608 - quoted identifier
        return {row[0]: (row[1], row[2]) for row in cur.fetchall()}


def _pg_name(table: str) -> str:
    return '"' + table.replace('"', '""') + '"'


def _exists(conn: Any, table: str) -> bool:
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass(%s) IS NOT NULL", (_pg_name(table),))
        return bool(cur.fetchone()[0])


def _events_since(stack: Any, table: str, since: int) -> list[Any]:
    """The table's events on the topic written after `since` (the table's own life)."""
    events = topic_events(stack, table)
    return [event for event in events.itertuples() if str_to_lsn(event.lsn) > since]


def _migrate(conn: Any, table: str) -> int:
    """The migration the exercise protects: every note's title changes, no body is touched."""
    with conn.cursor() as cur:
        cur.execute(f"UPDATE {_pg_name(table)} SET title = title || ' (revised)'")  # noqa: S608 - quoted identifier
        return cur.rowcount


def naive_copy(ch: Any, table: str, events: list[Any]) -> str:
    """Route `events` the naive way (exhibit 2: every payload an upsert, every missing value a
    type default) into a fresh `<table>_naive`; returns that table's name."""
    naive = f"{table}_naive"
    ch.command(f"DROP TABLE IF EXISTS {quote_identifier(naive)}")
    ch.command(
        f"CREATE TABLE {quote_identifier(naive)} (id UInt64, title String, body String, "
        "is_deleted UInt8, lsn UInt64) ENGINE = ReplacingMergeTree(lsn, is_deleted) ORDER BY id"
    )
    rows = []
    for event in events:
        if event.operation not in ("read", "insert", "update", "delete"):
            continue
        payload = event.payload or {}
        rows.append([
            payload.get("id") or 0,
            payload.get("title") or "",
            payload.get("body") or "",  # absent (unchanged TOAST) becomes '': the trap
            int(event.operation == "delete"),
            str_to_lsn(event.lsn),
        ])  # fmt: skip
    if rows:
        ch.insert(naive, rows, column_names=NOTE_COLUMNS)
    return naive


def _ch_notes(ch: Any, naive: str) -> dict[int, tuple[str, str]]:
    rows = ch.query(f"SELECT id, title, body FROM {quote_identifier(naive)} FINAL").result_rows  # noqa: S608 - quoted identifier
    return {int(row[0]): (row[1], row[2]) for row in rows}


def _shown(value: str) -> str:
    return f"{len(value):,} characters" if len(value) > 40 else repr(value)


def _differences(source: dict, warehouse: dict) -> list[str]:
    """One line per note that differs, naming the column and both values."""
    lines = []
    for note in sorted(source.keys() | warehouse.keys()):
        if note not in warehouse:
            lines.append(f"note {note} is missing in ClickHouse")
        elif note not in source:
            lines.append(f"note {note} is in ClickHouse only")
        else:
            for column, pg_value, ch_value in zip(
                ("title", "body"), source[note], warehouse[note], strict=True
            ):
                if pg_value != ch_value:
                    lines.append(
                        f"note {note}: {column} is {_shown(ch_value)} in ClickHouse, "
                        f"{_shown(pg_value)} in PostgreSQL"
                    )
    return lines


def _full_siblings(conn: Any, table: str) -> list[str]:
    """Other tables of the lesson (same name prefix, e.g. museum_) set to REPLICA IDENTITY FULL."""
    prefix = table.split("_")[0] + "\\_%"
    with conn.cursor() as cur:
        cur.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relkind = 'r' AND c.relreplident = 'f' "
            "AND c.relname LIKE %s AND c.relname <> %s ORDER BY 1",
            (prefix, table),
        )
        return [row[0] for row in cur.fetchall()]


@self_check
def check_toast_fix(stack: Any, table: str, since: int | str) -> None:
    """After the fix, a migration that changes every note's title (the check runs it once per
    table) reaches ClickHouse whole through the naive router: PostgreSQL == ClickHouse, row by
    row. `since` is the WAL position before the table was made (older events are not its own)."""
    since = str_to_lsn(since) if isinstance(since, str) else int(since)
    conn = stack.pg_connection()
    conn.autocommit = True
    try:
        if not _exists(conn, table):
            raise CheckFailed(
                f"there is no table {table} in PostgreSQL",
                "run the cell before the exercise: it makes the table and its notes",
            )
        events = _events_since(stack, table, since)
        migrated_now = not any(event.operation == "update" for event in events)
        if migrated_now:
            changed = _migrate(conn, table)
            arrived = wait_for(
                lambda: _updates_arrived(stack, table, since, changed), timeout=20, every=0.3
            )
            if arrived is None:
                raise CheckFailed(
                    f"the migration's {changed} updates of {table} did not reach the topic "
                    "within 20 s",
                    "is capture running? `python -m cdc_kit status` says",
                )
            events = arrived
        naive = naive_copy(stack.clickhouse(), table, events)
        source, warehouse = _pg_notes(conn, table), _ch_notes(stack.clickhouse(), naive)
        differences = _differences(source, warehouse)
        if differences:
            _diagnose(conn, table, differences, migrated_now)
        identity = replication.replica_identity(conn, table)
    finally:
        conn.close()
    passed(
        f"{table}: PostgreSQL and the naive router's copy agree row by row ({len(source)} "
        f"notes) after the migration changed every title; REPLICA IDENTITY {identity} sent "
        "each body along"
    )


def _updates_arrived(stack: Any, table: str, since: int, count: int) -> list[Any] | None:
    events = _events_since(stack, table, since)
    return events if sum(e.operation == "update" for e in events) >= count else None


def _diagnose(conn: Any, table: str, differences: list[str], migrated_now: bool) -> None:
    shown = "; ".join(differences[:3]) + (f"; ... ({len(differences)} in all)"
                                          if len(differences) > 3 else "")  # fmt: skip
    identity = replication.replica_identity(conn, table)
    ran = (
        "The migration has run now (once per table): re-run the cell that makes the table, "
        "then your fix, then this check."
        if migrated_now
        else "The migration had run already."
    )
    if identity == "FULL":
        raise CheckFailed(
            f"{table} has REPLICA IDENTITY FULL now, but the migration's updates were logged "
            f"before it was set, without the bodies: {shown}. The setting changes what "
            "PostgreSQL writes from then on, not what is already in the WAL",
            TOO_LATE_HINTS,
        )
    siblings = _full_siblings(conn, table)
    if siblings:
        raise CheckFailed(
            f"REPLICA IDENTITY FULL is set on {', '.join(siblings)}, but the migration changed "
            f"{table}, whose REPLICA IDENTITY is still {identity}: {shown}. {ran}",
            WRONG_TABLE_HINTS,
        )
    raise CheckFailed(
        f"{table} still has REPLICA IDENTITY {identity}: the migration's updates did not carry "
        f"the unchanged bodies, and the naive router wrote '': {shown}. {ran}",
        NOTHING_HINTS,
    )


def solution() -> None:
    """Show a worked solution of this lesson's build exercise."""
    show_solution(__name__)
