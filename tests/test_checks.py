"""The lessons' self-checks against the real stack: the right answer passes; the placeholder
and a real typical wrong answer fail, with a message that says what to try."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Union, get_args, get_origin

import pytest
from sqlmodel import Field, SQLModel

from cdc_kit import olap, oltp, replication
from cdc_kit.checks import lesson00, lesson01, lesson02, lesson03, lesson04, lesson05
from cdc_kit.checks.common import topic_events, wait_for
from cdc_kit.lsn import lsn_to_str, str_to_lsn
from cdc_kit.olap import CdcFields, CdcOlapModelBase, create_table_sql
from cdc_kit.router import Router
from cdc_kit.stack import Stack
from tests.conftest import fails, run_sql


@pytest.fixture()
def router(lab: Stack) -> Iterator[Router]:
    routing = Router(lab)
    yield routing
    routing.close()


def new_product(stack: Stack, price: str = "10.00") -> int:
    return run_sql(
        stack,
        "INSERT INTO product (name, category, price) VALUES (:name, 'test', :price) RETURNING id",
        name=f"check {uuid.uuid4().hex[:6]}",
        price=price,
    )[0][0]


# ---- lesson 00: one statement, three events; the LSN of one of them ---------------------------
def three_customers(stack: Stack) -> list[str]:
    """One INSERT statement that adds three customers, as the lesson does; their names."""
    tag = uuid.uuid4().hex[:6]
    names = [f"Check Ada {tag}", f"Check Grace {tag}", f"Check Alan {tag}"]
    run_sql(
        stack,
        "INSERT INTO customer (email, name, country, city) VALUES "
        "(:e1, :n1, 'GB', 'Leeds'), (:e2, :n2, 'US', 'Boston'), (:e3, :n3, 'GB', 'York')",
        e1=f"a{tag}@example.com", n1=names[0], e2=f"g{tag}@example.com", n2=names[1],
        e3=f"t{tag}@example.com", n3=names[2],
    )  # fmt: skip
    return names


def inserts_of(stack: Stack, names: list[str]) -> list[dict]:
    """The insert events of `names`, in topic order, once all of them are there."""

    def all_there() -> list[dict] | None:
        events = topic_events(stack, "customer")
        mine = events[events["payload"].map(lambda row: row.get("name") in names)]
        return mine.to_dict("records") if len(mine) == len(names) else None

    found = wait_for(all_there)
    assert found is not None, "capture did not publish the three inserts"
    return found


def test_lesson00_one_insert_of_three_rows_publishes_three_events(
    lab: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    names = three_customers(lab)
    for prediction, says in [
        (3, "✓ You predicted 3: right."),
        ("3", "✓ You predicted '3': right."),
        (1, "one event per statement"),
        (0, "only reads the topic"),
        (None, "holds no prediction yet"),
    ]:
        lesson00.reveal_events_per_row(prediction, lab, names)
        out = capsys.readouterr().out
        assert says in out and "one event per changed row" in out, out


def test_lesson00_the_lsn_of_the_customers_insert_event(
    lab: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    # A position read before the INSERT, where no event starts (a logical message goes first)
    before = run_sql(lab, "SELECT pg_current_wal_lsn()::text")[0][0]
    run_sql(lab, "SELECT pg_logical_emit_message(false, 'cdc_kit_test', 'x')")
    names = three_customers(lab)
    mine, other, _ = inserts_of(lab, names)
    name = names[0]

    lesson00.check_event_lsn(lab, name, mine["lsn"])
    lesson00.check_event_lsn(lab, name, str_to_lsn(mine["lsn"]))  # the integer form too
    assert "✓" in capsys.readouterr().out
    fails(lesson00.check_event_lsn, lab, name, None, says="placeholder")
    fails(lesson00.check_event_lsn, lab, name, other["lsn"], says="another event")
    fails(lesson00.check_event_lsn, lab, name, int(mine["offset"]), says="the event's offset")

    slot = run_sql(
        lab,
        "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = :s",
        s=lab.settings.slot_name,
    )[0][0]
    fails(lesson00.check_event_lsn, lab, name, slot, says="replication slot")
    current = run_sql(lab, "SELECT pg_current_wal_lsn()::text")[0][0]
    fails(lesson00.check_event_lsn, lab, name, current, says="pg_current_wal_lsn()")
    fails(lesson00.check_event_lsn, lab, name, before, says="before your event")


# ---- lesson 01: what FINAL shows for a deleted row; a fresh price, read back with FINAL -------
def test_lesson01_final_leaves_a_deleted_product_out(
    lab: Stack, router: Router, capsys: pytest.CaptureFixture[str]
) -> None:
    product = new_product(lab)
    router.catch_up()
    run_sql(lab, "DELETE FROM product WHERE id = :id", id=product)
    router.catch_up()
    for prediction, says in [
        (0, "✓ You predicted 0: right."),
        (1, "expected FINAL to show the delete marker"),
        (2, "never returns two versions"),
        (None, "holds no prediction yet"),
    ]:
        lesson01.reveal_final_rows(prediction, lab, product)
        out = capsys.readouterr().out
        assert says in out and "with FINAL returned 0 row(s)" in out, out


def test_lesson01_a_price_read_from_clickhouse_with_final(
    lab: Stack, router: Router, capsys: pytest.CaptureFixture[str]
) -> None:
    product, other = new_product(lab), new_product(lab)
    router.catch_up()
    ch = lab.clickhouse()
    ch.command("SYSTEM STOP MERGES product")  # keep both versions for the no-FINAL answer
    try:
        target = Decimal(random.randint(100_000, 999_999)) / 100  # no sample product costs that
        run_sql(lab, "UPDATE product SET price = :p WHERE id = :id", p=target, id=other)
        fails(lesson01.check_price, lab, product, target, target, 1, says=f"product {other} has it")

        run_sql(lab, "UPDATE product SET price = :p WHERE id = :id", p=target, id=product)
        fails(lesson01.check_price, lab, product, target, target, 1, says="came from PostgreSQL")
        fails(lesson01.check_price, lab, product, target, "10.00", 1, says="not been routed")
        router.catch_up()
        price, lsn = ch.query(
            "SELECT price, lsn FROM product FINAL WHERE id = {id:UInt64}",
            parameters={"id": product},
        ).result_rows[0]
        lesson01.check_price(lab, product, target, price, lsn)
        events = topic_events(lab, "product")
        on_topic = events[events["payload"].map(lambda row: row.get("id") == product)]
        lesson01.check_price(lab, product, target, price, on_topic["lsn"].iloc[-1])  # "X/Y" form
        as_numpy = ch.query_df(
            "SELECT price, lsn FROM product FINAL WHERE id = {id:UInt64}",
            parameters={"id": product},
        ).iloc[0]
        lesson01.check_price(lab, product, target, as_numpy["price"], as_numpy["lsn"])
        assert capsys.readouterr().out.count("✓") == 3
        fails(lesson01.check_price, lab, product, target, None, None, says="placeholder")

        oldest = ch.query(  # what a read without FINAL may return: the first version stored
            "SELECT price, lsn FROM product WHERE id = {id:UInt64} ORDER BY lsn LIMIT 1",
            parameters={"id": product},
        ).result_rows[0]
        fails(lesson01.check_price, lab, product, target, *oldest, says="older version")
        current = run_sql(lab, "SELECT pg_current_wal_lsn()::text")[0][0]
        fails(lesson01.check_price, lab, product, target, price, current, says="no version")
    finally:
        ch.command("SYSTEM START MERGES product")
        router.catch_up()


# ---- lesson 02: the OLAP model of a new entity, and its table ----------------------------------
class ReviewBase(SQLModel):
    productId: int = Field(foreign_key="product.id")
    rating: int = Field(ge=1, le=5)
    verdict: str = Field(max_length=20)
    comment: str | None = Field(default=None, max_length=2000)
    createdAt: datetime = Field(default_factory=oltp.utcnow)


class ReviewOlap(CdcOlapModelBase, ReviewBase, CdcFields):
    __table__ = "review"
    id: Annotated[int, "uint64"]
    productId: Annotated[int, "uint64"]
    verdict: Annotated[str, "LowCardinality"]


class ReviewOlapSignedIds(CdcOlapModelBase, ReviewBase, CdcFields):
    """The typical slip: ids left as plain `int`, so ClickHouse makes them Int64."""

    __table__ = "review"
    id: int
    verdict: Annotated[str, "LowCardinality"]


class ReviewOlapSignedProductId(CdcOlapModelBase, ReviewBase, CdcFields):
    """`id` made unsigned, `productId` forgotten (it stays the base's plain int)."""

    __table__ = "review"
    id: Annotated[int, "uint64"]
    verdict: Annotated[str, "LowCardinality"]


class ReviewOlapPlainVerdict(CdcOlapModelBase, ReviewBase, CdcFields):
    """The ids right, `verdict` left as the base's plain str: String, not LowCardinality."""

    __table__ = "review"
    id: Annotated[int, "uint64"]
    productId: Annotated[int, "uint64"]


def test_lesson02_a_table_class_does_not_validate_when_called(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from cdc_kit.oltp import Product

    try:
        Product(name="", category="brewing", price=-1)
        raised = False
    except ValueError:  # pydantic's ValidationError is a ValueError
        raised = True
    assert raised is False, "SQLModel now validates table classes: lesson 02's step 3 changes"
    for prediction, says in [
        (False, "✓ You predicted False: right."),
        ("false", "right."),
        (True, "You expected the rules of ProductBase to run"),
        (None, "holds no prediction yet"),
    ]:
        lesson02.reveal_table_class(prediction, raised)
        out = capsys.readouterr().out
        assert says in out and "model_validate" in out, out


@pytest.mark.parametrize(
    ("engine_full", "parts"),
    [
        ("ReplacingMergeTree(lsn, is_deleted) ORDER BY id SETTINGS index_granularity = 8192",
         ("ReplacingMergeTree", ["lsn", "is_deleted"])),
        ("ReplacingMergeTree(`lsn`) ORDER BY id", ("ReplacingMergeTree", ["lsn"])),
        ("ReplacingMergeTree ORDER BY id", ("ReplacingMergeTree", [])),
        ("ReplacingMergeTree() ORDER BY id", ("ReplacingMergeTree", [])),
        ("MergeTree ORDER BY id", ("MergeTree", [])),
    ],
)  # fmt: skip
def test_lesson02_reads_the_engines_parameters(engine_full: str, parts: tuple) -> None:
    assert lesson02.engine_parts(engine_full) == parts


def test_lesson02_the_review_table_made_from_its_olap_model(
    lab: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    ch = lab.clickhouse()
    database = lab.settings.clickhouse_database
    ch.command("DROP TABLE IF EXISTS review")
    fails(lesson02.check_review_table, lab, None, says="placeholder")
    fails(lesson02.check_review_table, lab, ReviewOlap, says="no table")

    ch.command(create_table_sql(ReviewOlap, database=database))
    lesson02.check_review_table(lab, ReviewOlap)
    assert "✓" in capsys.readouterr().out

    def remade(model: type, sql: str | None = None) -> None:
        ch.command("DROP TABLE IF EXISTS review")
        ch.command(sql or create_table_sql(model, database=database))

    try:
        remade(ReviewOlapSignedIds)
        fails(lesson02.check_review_table, lab, ReviewOlapSignedIds, says="`id` is Int64")
        remade(ReviewOlapSignedProductId)
        fails(
            lesson02.check_review_table, lab, ReviewOlapSignedProductId,
            says="`productId` is Int64, a signed integer",
        )  # fmt: skip
        remade(ReviewOlapPlainVerdict)
        fails(lesson02.check_review_table, lab, ReviewOlapPlainVerdict, says="plain String")

        made = create_table_sql(ReviewOlap, database=database)
        engine = "ReplacingMergeTree(`lsn`, `is_deleted`)"
        assert engine in made
        for other, says in [
            ("ReplacingMergeTree(`lsn`)", "ReplacingMergeTree(lsn): the newest lsn wins"),
            ("ReplacingMergeTree()", "without a version column"),
            ("ReplacingMergeTree", "without a version column"),
            ("MergeTree()", "not a ReplacingMergeTree"),
            ("ReplacingMergeTree(`is_deleted`)", "not a ReplacingMergeTree(lsn, is_deleted)"),
        ]:
            remade(ReviewOlap, made.replace(engine, other))
            fails(lesson02.check_review_table, lab, ReviewOlap, says=says)

        remade(ReviewOlap, made.replace("ORDER BY (`id`)", "ORDER BY (`productId`, `id`)"))
        fails(lesson02.check_review_table, lab, ReviewOlap, says="ordered by productId, id")
        remade(ReviewOlap)
        fails(  # a table made from another model than the one handed in
            lesson02.check_review_table, lab, ReviewOlapSignedIds, says="not made from this"
        )
    finally:
        ch.command("DROP TABLE IF EXISTS review")


# ---- lesson 03: a slot moved past a fresh target, not only peeked ------------------------------
def test_lesson03_the_text_slot_moved_past_the_target(
    lab: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    slot = f"check_text_{uuid.uuid4().hex[:6]}"
    conn = lab.pg_connection()
    conn.autocommit = True
    try:
        replication.ensure_slot(conn, slot, plugin="test_decoding")
        with conn.cursor() as cur:
            cur.execute("SELECT pg_log_standby_snapshot()")
        new_product(lab)
        with conn.cursor() as cur:
            cur.execute("SELECT pg_current_wal_flush_lsn()::text")  # a slot moves over flushed WAL
            target = cur.fetchone()[0]
        before = lsn_to_str(replication.confirmed_lsn(conn, slot))
        fails(lesson03.check_slot_released, lab, slot, target, None, says="placeholder")

        peeked = replication.peek_text_changes(conn, slot)  # reads, moves nothing
        assert peeked
        fails(lesson03.check_slot_released, lab, slot, target, before, says="still at")
        fails(lesson03.check_slot_released, lab, slot, target, target, says="peeking")

        with conn.cursor() as cur:
            cur.execute("SELECT pg_replication_slot_advance(%s, %s::pg_lsn)", (slot, target))
        position = lsn_to_str(replication.confirmed_lsn(conn, slot))
        lesson03.check_slot_released(lab, slot, target, position)
        assert "✓" in capsys.readouterr().out
        fails(lesson03.check_slot_released, lab, slot, target, before, says="but")

        replication.drop_slot(conn, slot)
        fails(lesson03.check_slot_released, lab, slot, target, position, says="does not exist")
    finally:
        replication.drop_slot(conn, slot)
        conn.close()


# ---- lesson 04: the tombstone of a fresh delete ------------------------------------------------
def test_lesson04_the_tombstone_lsn_of_a_deleted_product(
    lab: Stack, router: Router, capsys: pytest.CaptureFixture[str]
) -> None:
    product = new_product(lab)
    router.catch_up()
    fails(lesson04.check_tombstone, lab, product, None, says="placeholder")
    fails(lesson04.check_tombstone, lab, product, "0/1", says="still exists")

    ch = lab.clickhouse()
    ch.command("SYSTEM STOP MERGES product")  # keep the live version beside the tombstone
    try:
        run_sql(lab, "DELETE FROM product WHERE id = :id", id=product)
        fails(lesson04.check_tombstone, lab, product, "0/1", says="no tombstone")
        router.catch_up()
        rows = ch.query(
            "SELECT is_deleted, lsn FROM product WHERE id = {id:UInt64} ORDER BY lsn",
            parameters={"id": product},
        ).result_rows
        tombstone = next(lsn for deleted, lsn in rows if deleted == 1)
        live = next(lsn for deleted, lsn in rows if deleted == 0)
        lesson04.check_tombstone(lab, product, tombstone)
        lesson04.check_tombstone(lab, product, lsn_to_str(tombstone))
        assert "✓" in capsys.readouterr().out
        fails(lesson04.check_tombstone, lab, product, live, says="live version")
        fails(lesson04.check_tombstone, lab, product, tombstone + 1, says="not the lsn")
    finally:
        ch.command("SYSTEM START MERGES product")


# ---- lesson 05: a default for any annotation ---------------------------------------------------
TYPE_DEFAULTS = {
    str: "", int: 0, float: 0.0, bool: False, Decimal: Decimal(0), datetime: datetime(1970, 1, 1)
}  # fmt: skip


def seed_unwrap(annotation: object) -> object:
    """The seed's unwrapping: `typing.Union` only, so `X | None` stays wrapped."""
    if get_origin(annotation) is Union:
        annotation = [a for a in get_args(annotation) if a is not type(None)][0]
    if get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return annotation


def test_lesson05_type_default_on_every_column_and_a_real_delete(
    lab: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    product = new_product(lab)
    run_sql(lab, "DELETE FROM product WHERE id = :id", id=product)
    assert wait_for(lambda: _delete_on_topic(lab, product)), "capture did not publish the delete"

    lesson05.check_type_default(lambda a: TYPE_DEFAULTS[olap.unwrap(a)[0]], lab, product)
    assert "✓" in capsys.readouterr().out

    def placeholder(annotation: object) -> None: ...

    fails(lesson05.check_type_default, placeholder, lab, product, says="returned None")
    fails(lesson05.check_type_default, None, lab, product, says="not a function")
    fails(
        lesson05.check_type_default,
        lambda a: TYPE_DEFAULTS[seed_unwrap(a)], lab, product,
        says="raised KeyError",
    )  # fmt: skip
    fails(
        lesson05.check_type_default,
        lambda a: TYPE_DEFAULTS.get(a), lab, product,  # forgot to unwrap at all
        says="returned None",
    )  # fmt: skip
    fails(
        lesson05.check_type_default,
        lambda a: TYPE_DEFAULTS[olap.unwrap(a)[0]], lab, product + 10_000_000,
        says="no delete event",
    )  # fmt: skip


def _delete_on_topic(stack: Stack, product: int) -> bool | None:
    events = topic_events(stack, "product")
    found = events[(events["key"] == f"product:{product}") & (events["operation"] == "delete")]
    return True if not found.empty else None
