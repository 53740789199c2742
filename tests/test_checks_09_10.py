"""The self-checks of lessons 09 and 10 fail on the placeholder and on the typical wrong answers
(with what to try), and pass on the solutions, against the real stack."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from decimal import Decimal

import ipywidgets
import pytest

from cdc_kit import olap, replication
from cdc_kit.checks import CheckFailed, lesson09, lesson10
from cdc_kit.lsn import lsn_to_str
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


# ---- lesson 10: the prediction of exhibit 1 ------------------------------------------------------
@pytest.mark.parametrize(
    ("prediction", "says"),
    [
        (True, "✓ You predicted True: right."),
        ("yes", "✓ You predicted 'yes': right."),
        (False, "as it does in lesson 07"),
        (None, "holds no prediction yet"),
    ],
    ids=["right", "right, as a word", "wrong", "placeholder"],
)
def test_lesson10_the_ghost_prediction_gets_its_explanation(
    prediction: object, says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    lesson10.reveal_ghost(prediction, True)  # never raises
    out = capsys.readouterr().out
    assert says in out and "('', 1)" in out


# ---- lesson 10: the TOAST repair at the source -------------------------------------------------
LONG = "Notes on the Analytical Engine. " * 200  # 6,400 characters: stored out of line


@pytest.fixture()
def notes(stack: Stack) -> Iterator[tuple[str, int]]:
    """The exercise's table, fresh: three notes with long bodies (TOASTed), and the WAL position
    before it was made (the check reads the table's own events from there)."""
    table = f"test_notes_{uuid.uuid4().hex[:8]}"
    conn = stack.pg_connection()
    conn.autocommit = True
    since = replication.current_wal_lsn(conn)
    conn.close()
    run_sql(stack, f"CREATE TABLE {table} (id int PRIMARY KEY, title text NOT NULL, "
                   "body text NOT NULL)")  # fmt: skip
    run_sql(stack, f"ALTER TABLE {table} ALTER COLUMN body SET STORAGE EXTERNAL")
    run_sql(stack, f"INSERT INTO {table} SELECT n, 'Note ' || n, :body "
                   "FROM generate_series(1, 3) AS n", body=LONG)  # fmt: skip
    yield table, since
    run_sql(stack, f"DROP TABLE IF EXISTS {table}")
    stack.clickhouse().command(f"DROP TABLE IF EXISTS `{table}_naive`")


def full(stack: Stack, table: str) -> None:
    run_sql(stack, f"ALTER TABLE {table} REPLICA IDENTITY FULL")


def test_lesson10_the_toast_fix_passes_when_applied_before_the_migration(
    stack: Stack, notes: tuple[str, int], capsys: pytest.CaptureFixture[str]
) -> None:
    table, since = notes
    full(stack, table)
    lesson10.check_toast_fix(stack, table, since)
    assert "✓" in capsys.readouterr().out
    lesson10.check_toast_fix(stack, table, lsn_to_str(since))  # again: no second migration
    assert "✓" in capsys.readouterr().out
    titles = run_sql(stack, f"SELECT title FROM {table} ORDER BY id")
    assert titles == [("Note 1 (revised)",), ("Note 2 (revised)",), ("Note 3 (revised)",)]


def test_lesson10_the_toast_fix_fails_when_nothing_was_done(
    stack: Stack, notes: tuple[str, int]
) -> None:
    table, since = notes
    failed = fails(lesson10.check_toast_fix, stack, table, since, says="still has REPLICA "
                   "IDENTITY DEFAULT")  # fmt: skip
    assert "note 1: body is '' in ClickHouse, 6,400 characters in PostgreSQL" in failed.problem
    assert "re-run the cell that makes the table" in failed.problem


def test_lesson10_the_toast_fix_fails_on_the_wrong_table(
    stack: Stack, notes: tuple[str, int]
) -> None:
    table, since = notes
    decoy = f"test_decoy_{uuid.uuid4().hex[:8]}"
    run_sql(stack, f"CREATE TABLE {decoy} (id int PRIMARY KEY)")
    try:
        full(stack, decoy)
        fails(
            lesson10.check_toast_fix, stack, table, since,
            says=f"REPLICA IDENTITY FULL is set on {decoy}, but the migration changed {table}",
        )  # fmt: skip
    finally:
        run_sql(stack, f"DROP TABLE {decoy}")


def test_lesson10_the_toast_fix_fails_when_applied_after_the_migration(
    stack: Stack, notes: tuple[str, int]
) -> None:
    table, since = notes
    fails(lesson10.check_toast_fix, stack, table, since, says="still has REPLICA IDENTITY")
    full(stack, table)  # too late: the migration's updates are in the WAL already
    failed = fails(lesson10.check_toast_fix, stack, table, since,
                   says="were logged before it was set")  # fmt: skip
    assert "note 2: body is ''" in failed.problem


def test_lesson10_the_toast_fix_needs_its_table(stack: Stack) -> None:
    fails(lesson10.check_toast_fix, stack, "test_notes_missing", 0, says="there is no table")


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
    ch.command(olap.create_table_sql(olap.CustomerOlap, database))  # as the router makes it
    lesson10.sorted_by_primary_key(ch, database, "customer")


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
