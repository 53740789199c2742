"""The self-checks of lessons 09 and 10 fail on the placeholder and on the typical wrong answers
(with what to try), and pass on the solutions, against the real stack."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Annotated

import pytest

from cdc_kit import olap
from cdc_kit.checks import CheckFailed, lesson09, lesson10
from cdc_kit.olap import CdcFields, CdcOlapModelBase
from cdc_kit.router import Router
from cdc_kit.stack import Stack
from cdc_kit.widgets import ChangeLab
from tests.conftest import fails, run_sql


# ---- lesson 09: how many events an order makes; a customer's delete and its cascade ----------
@pytest.fixture(scope="module")
def change_lab(stack: Stack, running_router: Router) -> Iterator[ChangeLab]:
    """The lab behind lesson 09's panel, with the router routing in its thread."""
    made = ChangeLab(stack, seed=9)
    yield made
    made.close()


def customer_with_an_order(lab: ChangeLab, items: int = 2) -> tuple[int, int]:
    customer = lab.insert("customer")
    order = lab.insert("order", customerId=customer.id, items=items)
    lab.wait_visible(order)
    return customer.id, order.id


@pytest.mark.parametrize(
    ("prediction", "says"),
    [(None, "holds no prediction"), (4, "✓ You predicted 4: right."),
     (1, "One per transaction?"), (3, "The order row itself")],
    ids=["placeholder", "right", "one per transaction", "items only"],
)  # fmt: skip
def test_lesson09_the_order_prediction_gets_feedback_never_an_error(
    stack: Stack, change_lab: ChangeLab, prediction: object, says: str,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    order = change_lab.insert("order", items=3)
    change_lab.wait_visible(order)
    assert lesson09.reveal_order_events(prediction, stack, order.id) == 4
    assert says in capsys.readouterr().out


def test_lesson09_the_cascade_check_fails_on_placeholders_and_on_rows_made_elsewhere(
    stack: Stack, change_lab: ChangeLab
) -> None:
    customer, order = customer_with_an_order(change_lab)
    fails(lesson09.check_cascade, change_lab, None, order, says="placeholder")
    fails(lesson09.check_cascade, change_lab, customer, None, says="placeholder")
    made_by_hand = run_sql(
        stack,
        "INSERT INTO customer (email, name, country, city) "
        "VALUES ('hand@example.com', 'By Hand', 'NL', 'Delft') RETURNING id",
    )[0][0]
    fails(lesson09.check_cascade, change_lab, made_by_hand, order, says="did not insert customer")
    fails(lesson09.check_cascade, change_lab, customer, 10**9, says="did not insert order")


def test_lesson09_the_cascade_check_fails_on_the_typical_wrong_experiments(
    change_lab: ChangeLab,
) -> None:
    customer, order = customer_with_an_order(change_lab)
    fails(lesson09.check_cascade, change_lab, customer, order, says="has not been deleted")
    someone_elses = change_lab.insert("order", items=2)  # no customerId: a random customer
    change_lab.wait_visible(someone_elses)
    fails(lesson09.check_cascade, change_lab, customer, someone_elses.id, says="belongs to")
    change_lab.wait_visible(change_lab.delete("order", order))  # the order, not its customer
    fails(lesson09.check_cascade, change_lab, customer, order, says="you deleted order")
    lonely = change_lab.insert("order", customerId=customer, items=[])
    change_lab.wait_visible(lonely)
    fails(lesson09.check_cascade, change_lab, customer, lonely.id, says="has no items")


def test_lesson09_the_cascade_check_waits_for_a_router(
    change_lab: ChangeLab, running_router: Router
) -> None:
    customer, order = customer_with_an_order(change_lab)
    running_router.stop()
    try:
        change_lab.delete("customer", customer)
        failed = fails(lesson09.check_cascade, change_lab, customer, order, 0.5,  # timeout
                       says="FINAL still shows")  # fmt: skip
        assert "router" in failed.hint.lower()
    finally:
        running_router.start()


def test_lesson09_the_cascade_check_passes_on_the_solution(
    change_lab: ChangeLab, capsys: pytest.CaptureFixture[str]
) -> None:
    customer, order = customer_with_an_order(change_lab)
    change_lab.wait_visible(change_lab.delete("customer", customer))
    lesson09.check_cascade(change_lab, customer, order)
    out = capsys.readouterr().out
    assert f"deleted order {order} and its 2 items" in out
    assert "(1 customer, 1 order, 2 items)" in out


# ---- lesson 10: count the accounts right ------------------------------------------------------
@pytest.fixture()
def accounts(stack: Stack) -> Iterator[tuple[str, Router]]:
    """Exhibit 5 on a table of its own: 3 accounts, 2 updates each... and one deleted, with the
    table's merges stopped so that every version stays visible."""
    table = f"test_account_{uuid.uuid4().hex[:8]}"
    model = type(
        "TestAccount",
        (CdcOlapModelBase, CdcFields),
        {
            "__table__": table,
            "__annotations__": {
                "id": Annotated[int, "uint64"],
                "owner": str,
                "balance": Decimal,
            },
        },
    )
    ch = stack.clickhouse()
    router = Router(stack, registry={**olap.OLAP_MODELS, table: model})
    columns = "id int PRIMARY KEY, owner text NOT NULL, balance numeric(10, 2) NOT NULL"
    run_sql(stack, f"CREATE TABLE {table} ({columns})")
    router.register(model)
    router.connect()  # creates the ClickHouse table
    ch.command(f"SYSTEM STOP MERGES `{table}`")
    steps = [
        f"INSERT INTO {table} VALUES (1, 'Ada', 100), (2, 'Blaise', 200), (3, 'Charles', 300)",
        *(f"UPDATE {table} SET balance = balance + 50 WHERE id = {n}" for n in (1, 2, 3)),
        f"DELETE FROM {table} WHERE id = 3",
    ]
    for step in steps:
        run_sql(stack, step)
        router.catch_up()  # one batch per change: the versions stay apart
    yield table, router
    router.close()
    run_sql(stack, f"DROP TABLE IF EXISTS {table}")
    ch.command(f"DROP TABLE IF EXISTS `{table}`")


def test_lesson10_fails_on_the_placeholder_and_on_bad_sql(stack: Stack, accounts) -> None:
    table, router = accounts
    check = lesson10.check_accounts_query
    fails(check, stack, router, None, table, says="placeholder")
    fails(check, stack, router, f"SELECT nothing FROM {table}", table, says="refused the query")
    fails(check, stack, router, f"SELECT id, balance FROM {table}", table, says="one row")


def test_lesson10_fails_on_a_query_without_final(stack: Stack, accounts) -> None:
    table, router = accounts
    every_version = f"SELECT count(), sum(balance) FROM {table}"
    failed = fails(
        lesson10.check_accounts_query, stack, router, every_version, table,
        says="every stored version",
    )  # fmt: skip
    assert "FINAL" in failed.hint


def test_lesson10_fails_when_the_deleted_account_is_counted(stack: Stack, accounts) -> None:
    table, router = accounts
    newest = (
        f"SELECT count(), sum(b) FROM (SELECT argMax(balance, lsn) AS b FROM {table} GROUP BY id)"
    )
    fails(lesson10.check_accounts_query, stack, router, newest, table, says="tombstone")


def test_lesson10_fails_on_numbers_written_by_hand(stack: Stack, accounts) -> None:
    table, router = accounts
    by_hand = "SELECT 2, toDecimal64(400, 2)"
    fails(
        lesson10.check_accounts_query, stack, router, by_hand, table, says="after one more update"
    )


@pytest.mark.parametrize(
    "query",
    [
        "SELECT count(), sum(balance) FROM {table} FINAL",
        "SELECT count(), sum(b) FROM (SELECT argMax(balance, lsn) AS b, "
        "argMax(is_deleted, lsn) AS gone FROM {table} GROUP BY id) WHERE gone = 0",
    ],
    ids=["final", "argmax"],
)
def test_lesson10_passes_on_both_correct_queries(
    stack: Stack, accounts, query: str, capsys: pytest.CaptureFixture[str]
) -> None:
    table, router = accounts
    lesson10.check_accounts_query(stack, router, query.format(table=table), table)
    assert "✓ 2 accounts, 401.00 in total" in capsys.readouterr().out


# ---- lesson 10: the exhibits' own checks -------------------------------------------------------
def test_snapshot_then_stream_needs_every_row_exactly_once() -> None:
    with pytest.raises(CheckFailed, match=r"rows \[3\] arrived twice"):
        lesson10.snapshot_then_stream([1, 2, 3], [3, 4], [1, 2, 3, 4])
    with pytest.raises(CheckFailed, match=r"rows \[4\] arrived neither"):
        lesson10.snapshot_then_stream([1, 2, 3], [5], [1, 2, 3, 4, 5])
    lesson10.snapshot_then_stream([1, 2, 3], [4, 5], [1, 2, 3, 4, 5])


def test_sorted_by_primary_key_tells_a_hand_written_key_from_the_kits(stack: Stack) -> None:
    ch, database = stack.clickhouse(), stack.settings.clickhouse_database
    table = f"test_ghost_{uuid.uuid4().hex[:8]}"
    try:
        ch.command(
            f"CREATE TABLE `{table}` (id UInt64, country String, is_deleted UInt8, lsn UInt64) "
            "ENGINE = ReplacingMergeTree(lsn, is_deleted) ORDER BY (country, id)"
        )
        fails(lesson10.sorted_by_primary_key, ch, database, table, says="sorted by (country, id)")
    finally:
        ch.command(f"DROP TABLE IF EXISTS `{table}`")
    lesson10.sorted_by_primary_key(ch, database, "customer")  # made by the kit from its model


def test_capture_slot_safe_notices_a_setting_left_changed(stack: Stack) -> None:
    conn = stack.pg_connection()
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW max_slot_wal_keep_size")
            setting = cur.fetchone()[0]
        fails(
            lesson10.capture_slot_safe, conn, stack.settings.slot_name, "32MB", "no_such_slot",
            says="not 32MB as before",
        )  # fmt: skip
        lesson10.capture_slot_safe(conn, stack.settings.slot_name, setting, "no_such_slot")
    finally:
        conn.close()
