"""The self-checks of lessons 09 and 10 fail on the placeholder and on the typical wrong answers
(with what to try), and pass on the solutions, against the real stack."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Annotated

import ipywidgets
import pytest

from cdc_kit import olap
from cdc_kit.checks import CheckFailed, lesson09, lesson10
from cdc_kit.olap import CdcFields, CdcOlapModelBase
from cdc_kit.router import Router
from cdc_kit.stack import Stack
from cdc_kit.widgets import ChangeLab
from tests.conftest import fails, run_sql


# ---- lesson 09: a button of your own ----------------------------------------------------------
@pytest.fixture(scope="module")
def change_lab(stack: Stack, running_router: Router) -> Iterator[ChangeLab]:
    """The lab behind lesson 09's panel, with the router routing in its thread."""
    made = ChangeLab(stack, seed=9)
    yield made
    made.close()


def button(handler=None) -> ipywidgets.Button:
    made = ipywidgets.Button(description="+10 %")
    if handler is not None:
        made.on_click(handler)
    return made


def raise_by(lab: ChangeLab, product_id: int, factor: str):
    def handler(_button: ipywidgets.Button) -> None:
        price = lab.pg_row("product", product_id)["price"].iloc[0]
        new = (price * Decimal(factor)).quantize(Decimal("0.01"))
        lab.update("product", product_id, price=new)

    return handler


def test_lesson09_fails_on_the_placeholder_and_on_a_non_button(change_lab: ChangeLab) -> None:
    product = change_lab.insert("product", price="20.00").id
    fails(lesson09.check_raise_button, change_lab, None, product, says="placeholder")
    fails(lesson09.check_raise_button, change_lab, "+10 %", product, says="not a button")


def test_lesson09_fails_on_a_button_without_a_handler(change_lab: ChangeLab) -> None:
    product = change_lab.insert("product", price="20.00").id
    check = lesson09.check_raise_button
    failed = fails(check, change_lab, button(), product, says="left the price")
    assert "on_click" in failed.hint


def test_lesson09_fails_on_the_wrong_raise(change_lab: ChangeLab) -> None:
    product = change_lab.insert("product", price="20.00").id
    wrong = button(raise_by(change_lab, product, "1.20"))
    fails(lesson09.check_raise_button, change_lab, wrong, product, says="from 20.00 to 24.00")


def test_lesson09_fails_when_clickhouse_never_follows(
    change_lab: ChangeLab, running_router: Router
) -> None:
    product = change_lab.insert("product", price="20.00").id
    change_lab.wait_visible()
    running_router.stop()
    try:
        raise_10 = button(raise_by(change_lab, product, "1.10"))
        failed = fails(
            lesson09.check_raise_button, change_lab, raise_10, product, 0.5,  # timeout
            says="still shows 20.00",
        )  # fmt: skip
        assert "router" in failed.hint
    finally:
        running_router.start()


def test_lesson09_passes_on_the_solution(
    change_lab: ChangeLab, capsys: pytest.CaptureFixture[str]
) -> None:
    product = change_lab.insert("product", price="20.00").id
    lesson09.check_raise_button(change_lab, button(raise_by(change_lab, product, "1.10")), product)
    assert "✓ one click raised product" in capsys.readouterr().out
    assert change_lab.ch_final("product", product)["price"].iloc[0] == Decimal("22.00")


def test_lesson09_passes_when_the_handler_bypasses_the_lab(
    stack: Stack, change_lab: ChangeLab, capsys: pytest.CaptureFixture[str]
) -> None:
    """A handler that writes PostgreSQL itself: the check follows FINAL, and times nothing."""
    product = change_lab.insert("product", price="20.00").id

    def handler(_button: ipywidgets.Button) -> None:
        run_sql(stack, "UPDATE product SET price = 22.00 WHERE id = :id", id=product)

    lesson09.check_raise_button(change_lab, button(handler), product)
    out = capsys.readouterr().out
    assert "✓ one click raised product" in out
    assert "commit -> FINAL" not in out
    assert change_lab.ch_final("product", product)["price"].iloc[0] == Decimal("22.00")


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
