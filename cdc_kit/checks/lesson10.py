"""Checks of lesson 10: each exhibit's fix, and the exercise (a correct query without merges)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from clickhouse_connect.driver.binding import quote_identifier
from clickhouse_connect.driver.exceptions import ClickHouseError
from sqlalchemy import text

from cdc_kit import reconcile
from cdc_kit.checks.common import (
    CheckFailed,
    ordered_by,
    passed,
    require_answer,
    self_check,
    show_solution,
    table_order,
)
from cdc_kit.errors import first_line
from cdc_kit.replication import slot_health

START_HINT = (
    "assign the query as text: accounts_sql = \"SELECT count(), sum(balance) FROM "
    "museum_account ...\"; what must the query add so that old versions and deleted accounts "
    "do not count? (the exhibit's text says)"
)
ACCOUNTS_HINT = (
    "read through FINAL (... FROM museum_account FINAL), which keeps the newest version of "
    "each row and hides deleted rows; or take argMax(column, lsn) per id and keep is_deleted = 0"
)


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
    passed(f"{table} is ORDER BY {key}: a tombstone now replaces the row it deletes")


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
        f"{slot} is {status[slot]}, max_slot_wal_keep_size is back to {setting}, and the "
        f"lost slot {gone} is dropped"
    )


# ---- the exercise -----------------------------------------------------------------------------
def _answer(ch: Any, query: str) -> tuple[int, Decimal]:
    try:
        rows = ch.query(query).result_rows
    except ClickHouseError as exc:
        reason = f"ClickHouse refused the query: {first_line(exc)}"
        raise CheckFailed(reason, ACCOUNTS_HINT) from None
    if len(rows) != 1 or len(rows[0]) != 2:
        raise CheckFailed(
            f"the query returned {len(rows)} row(s) of {len(rows[0]) if rows else 0} "
            "value(s); it must return one row: the number of accounts, the total balance",
            ACCOUNTS_HINT,
        )
    count, total = rows[0]
    return int(count), Decimal(str(total or 0))


def _source(engine: Any, table: str) -> tuple[int, Decimal]:
    name = engine.dialect.identifier_preparer.quote(table)
    with engine.connect() as conn:
        count, total = conn.execute(
            text(f"SELECT count(*), coalesce(sum(balance), 0) FROM {name}")  # noqa: S608 - quoted identifier
        ).one()
    return int(count), Decimal(total)


def _one_more_change(engine: Any, table: str) -> None:
    """Add 1 to the first account's balance: a query that hardcodes numbers cannot follow."""
    name = engine.dialect.identifier_preparer.quote(table)
    with engine.begin() as conn:
        conn.execute(
            text(f"UPDATE {name} SET balance = balance + 1 WHERE id = (SELECT min(id) FROM {name})")  # noqa: S608 - quoted identifier
        )


def _diagnose(ch: Any, table: str, answer: tuple[int, Decimal], truth: tuple[int, Decimal]) -> None:
    name = quote_identifier(table)
    every_version = ch.query(f"SELECT count(), sum(balance) FROM {name}").result_rows[0]  # noqa: S608 - quoted identifier
    newest = ch.query(
        f"SELECT count(), sum(b) FROM (SELECT argMax(balance, lsn) AS b FROM {name} GROUP BY id)"  # noqa: S608 - quoted identifier
    ).result_rows[0]
    if answer == (int(every_version[0]), Decimal(str(every_version[1]))):
        raise CheckFailed(
            f"your query counted every stored version ({answer[0]} rows for {truth[0]} "
            "accounts): without FINAL, ClickHouse returns versions it has not merged yet",
            ACCOUNTS_HINT,
        )
    if answer[0] == int(newest[0]) and answer[0] != truth[0]:
        raise CheckFailed(
            f"your query counts {answer[0]} accounts, PostgreSQL has {truth[0]}: the newest "
            "version of a deleted account is its tombstone (is_deleted = 1), and it was counted",
            "keep only rows whose newest version has is_deleted = 0, or use FINAL, which "
            "hides them",
        )
    raise CheckFailed(
        f"your query answers {answer[0]} accounts and {answer[1]} in total; PostgreSQL has "
        f"{truth[0]} and {truth[1]}",
        ACCOUNTS_HINT,
    )


@self_check
def check_accounts_query(stack: Any, router: Any, accounts_sql: Any,
                         table: str = "museum_account") -> None:  # fmt: skip
    """`accounts_sql` returns (number of accounts, total balance) as PostgreSQL has them, and
    still does after one more change is routed."""
    require_answer(accounts_sql, "accounts_sql", START_HINT)
    if not isinstance(accounts_sql, str):
        raise CheckFailed(
            f"`accounts_sql` is a {type(accounts_sql).__name__}, not SQL text", START_HINT
        )
    ch, engine = stack.clickhouse(), stack.pg_engine()
    truth, answer = _source(engine, table), _answer(ch, accounts_sql)
    if answer != truth:
        _diagnose(ch, table, answer, truth)
    _one_more_change(engine, table)
    router.catch_up()
    truth, answer = _source(engine, table), _answer(ch, accounts_sql)
    if answer != truth:
        raise CheckFailed(
            f"after one more update PostgreSQL has {truth[0]} accounts and {truth[1]}, your "
            f"query answers {answer[0]} and {answer[1]}",
            ACCOUNTS_HINT,
        )
    passed(
        f"{truth[0]} accounts, {truth[1]} in total: the same in PostgreSQL and from your query, "
        "also after one more update (merges or not)"
    )


def solution() -> None:
    """Show a worked solution of this lesson's build exercise."""
    show_solution(__name__)
