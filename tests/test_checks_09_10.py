"""The self-checks of lessons 09 and 10 fail on the placeholder and on the typical wrong answers
(with what to try), and pass on the solutions, against the real stack."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from cdc_kit import olap, replication
from cdc_kit.checks import CheckFailed, lesson09, lesson10
from cdc_kit.lsn import lsn_to_str
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
        "VALUES (:email, 'By Hand', 'NL', 'Delft') RETURNING id",
        email=f"hand.{uuid.uuid4().hex[:8]}@example.com",
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
