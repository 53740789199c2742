"""The lessons' self-checks against the real stack: the right answer passes; the placeholder
and a real typical wrong answer fail, with a message that says what to try."""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Optional, Union, get_args, get_origin

import pandas as pd
import pytest
from pydantic import BaseModel, ValidationInfo, model_validator
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


# ---- lesson 03: what an UPDATE carries; a slot moved past a fresh target, not only peeked ------
def test_lesson03_an_update_of_a_price_carries_no_old_values_under_default(
    lab: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    slot, publication = f"check_upd_{uuid.uuid4().hex[:6]}", f"check_pub_{uuid.uuid4().hex[:6]}"
    conn = lab.pg_connection()
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE PUBLICATION {publication} FOR TABLE product")
        replication.ensure_slot(conn, slot, plugin="pgoutput")
        product = new_product(lab)
        run_sql(lab, "UPDATE product SET price = 11 WHERE id = :id", id=product)
        assert lesson03.update_old_tuple(conn, slot, publication, product) == "none"
        for prediction, says in [
            (None, "holds no prediction yet"),
            ("none", "right"),
            ("key", "A DELETE carries the old key"),
            ("row", "only with REPLICA IDENTITY FULL"),
        ]:
            assert lesson03.reveal_update_old(prediction, conn, slot, publication, product) is None
            assert says in capsys.readouterr().out
        lesson03.reveal_update_old("none", conn, slot, publication, product + 10_000_000)
        assert "holds no UPDATE" in capsys.readouterr().out

        replication.set_replica_identity(conn, "product", "FULL")
        try:
            run_sql(lab, "UPDATE product SET price = 12 WHERE id = :id", id=product)
        finally:
            replication.set_replica_identity(conn, "product", "DEFAULT")
        assert lesson03.update_old_tuple(conn, slot, publication, product) == "row"
        run_sql(lab, "UPDATE product SET id = id + 1000000 WHERE id = :id", id=product)
        assert lesson03.update_old_tuple(conn, slot, publication, product + 1000000) == "key"
        run_sql(lab, "DELETE FROM product WHERE id = :id", id=product + 1000000)
    finally:
        replication.drop_slot(conn, slot)
        with conn.cursor() as cur:
            cur.execute(f"DROP PUBLICATION IF EXISTS {publication}")
        conn.close()


def test_lesson03_the_text_slot_moved_past_the_target(
    lab: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    slot, other = (f"check_{kind}_{uuid.uuid4().hex[:6]}" for kind in ("text", "other"))
    conn = lab.pg_connection()
    conn.autocommit = True

    def position(name: str) -> str:
        return lsn_to_str(replication.confirmed_lsn(conn, name))

    try:
        replication.ensure_slot(conn, slot, plugin="test_decoding")
        replication.ensure_slot(conn, other, plugin="test_decoding")
        replication.log_running_transactions(conn)
        new_product(lab)
        with conn.cursor() as cur:
            cur.execute("SELECT pg_current_wal_flush_lsn()::text")  # a slot moves over flushed WAL
            target = cur.fetchone()[0]
        before = position(slot)
        check = lesson03.check_slot_released
        fails(check, lab, slot, target, None, says="placeholder")

        peeked = replication.peek_text_changes(conn, slot)  # reads, moves nothing
        assert peeked
        fails(check, lab, slot, target, before, says="still at")
        fails(check, lab, slot, target, peeked[-1][0], says="peeking reads without moving")

        with conn.cursor() as cur:  # the wrong slot moved, and read back
            cur.execute("SELECT pg_replication_slot_advance(%s, %s::pg_lsn)", (other, target))
        fails(check, lab, slot, target, position(other), says="you moved (or read) another slot")
        fails(check, lab, slot, target, before, says="you moved (or read) another slot")

        with conn.cursor() as cur:
            cur.execute("SELECT pg_replication_slot_advance(%s, %s::pg_lsn)", (slot, target))
            cur.execute(
                "SELECT restart_lsn::text FROM pg_replication_slots WHERE slot_name = %s", (slot,)
            )
            restart = cur.fetchone()[0]
        moved = position(slot)
        assert restart != moved
        fails(check, lab, slot, target, restart, says="restart_lsn")
        fails(check, lab, slot, target, before, says="but")
        check(lab, slot, target, moved)
        assert "✓" in capsys.readouterr().out

        replication.drop_slot(conn, slot)
        fails(check, lab, slot, target, moved, says="does not exist")
    finally:
        replication.drop_slot(conn, slot)
        replication.drop_slot(conn, other)
        conn.close()


# ---- lesson 04: what a delete marker holds, read from ClickHouse (only it has one) ------------
def test_lesson04_a_delete_under_full_keeps_the_old_values_in_its_delete_marker(
    lab: Stack, router: Router, capsys: pytest.CaptureFixture[str]
) -> None:
    product = new_product(lab)
    conn = lab.pg_connection()
    conn.autocommit = True
    try:
        replication.set_replica_identity(conn, "product", "FULL")
        try:
            run_sql(lab, "DELETE FROM product WHERE id = :id", id=product)
        finally:
            replication.set_replica_identity(conn, "product", "DEFAULT")
    finally:
        conn.close()
    router.catch_up()
    (name,) = lab.clickhouse().query(
        "SELECT name FROM product WHERE id = {id:UInt64} AND is_deleted = 1",
        parameters={"id": product},
    ).result_rows[0]
    for prediction, says in [
        (None, "holds no prediction yet"),
        ("old", "right"),
        ("empty", "does not blank a delete"),
        ("null", "not Nullable(String)"),
    ]:
        assert lesson04.reveal_full_marker_name(prediction, lab, product, name) is None
        assert says in capsys.readouterr().out
    lesson04.reveal_full_marker_name("old", lab, product + 10_000_000, name)
    assert "no delete marker" in capsys.readouterr().out


def test_lesson04_the_delete_marker_of_a_deleted_product(
    lab: Stack, router: Router, capsys: pytest.CaptureFixture[str]
) -> None:
    check = lesson04.check_delete_marker
    product, other = new_product(lab), new_product(lab)
    router.catch_up()
    fails(check, lab, product, ..., says="placeholder")
    fails(check, lab, product, {"id": product}, says="still exists")

    ch = lab.clickhouse()
    ch.command("SYSTEM STOP MERGES product")  # keep the live version beside the delete marker
    try:
        run_sql(lab, "DELETE FROM product WHERE id IN (:a, :b)", a=product, b=other)
        fails(check, lab, product, {"id": product}, says="no delete marker")
        router.catch_up()

        def read(where: str, final: str = "") -> object:
            return ch.query(
                f"SELECT * FROM product {final} WHERE id = {{id:UInt64}} AND {where}",
                parameters={"id": product},
            ).first_item

        marker, live = read("is_deleted = 1"), read("is_deleted = 0")
        assert marker and live
        check(lab, product, marker)
        frame = ch.query_df(
            "SELECT * FROM product WHERE id = {id:UInt64} AND is_deleted = 1",
            parameters={"id": product},
        )
        check(lab, product, frame)
        check(lab, product, frame.iloc[0])
        assert "✓" in capsys.readouterr().out

        fails(check, lab, product, read("1 = 1", final="FINAL"), says="no row came back")
        fails(check, lab, product, frame.iloc[0:0], says="no row came back")
        payload = next(
            event["payload"]
            for _, event in topic_events(lab, "product").iterrows()
            if event["key"] == f"product:{product}" and event["operation"] == "delete"
        )
        fails(check, lab, product, payload, says="what the delete event on the topic carries")
        fails(check, lab, product, live, says="live version")
        fails(check, lab, product, {"name": "", "price": 0}, says="has no category, is_deleted")
        other_marker = ch.query(
            "SELECT * FROM product WHERE id = {id:UInt64} AND is_deleted = 1",
            parameters={"id": other},
        ).first_item
        fails(check, lab, product, other_marker, says="differs from the delete marker")
    finally:
        ch.command("SYSTEM START MERGES product")


# ---- lesson 05: which seed tables accept a delete; the delete-only validator ---------------------
TYPE_DEFAULTS = {
    str: "", int: 0, float: 0.0, bool: False, Decimal: Decimal(0), datetime: datetime(1970, 1, 1)
}  # fmt: skip
#: Python 3.14 made `X | None` and `Optional[X]` one union type; before, the seed's test missed `|`.
ONE_UNION_TYPE = get_origin(str | None) is Union


def seed_unwrap(annotation: object) -> object:
    """The seed's unwrapping: `typing.Union` only, so on 3.11-3.13 `X | None` stays wrapped."""
    if get_origin(annotation) is Union:
        annotation = [a for a in get_args(annotation) if a is not type(None)][0]
    if get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return annotation


class ProductColumns(BaseModel):
    """The lesson's columns: the product table, types only, both spellings of "or None"."""

    id: Annotated[int, "uint64"]
    name: str
    category: Annotated[str, "LowCardinality"]
    price: Decimal
    description: str | None
    createdAt: Optional[datetime]  # noqa: UP045 - the spelling under test
    is_deleted: Annotated[int, "uint8"] = 0
    lsn: Annotated[int, "uint64"] = 0


Fill = Callable[[type[BaseModel], dict[str, Any], ValidationInfo], Any]


def learners_model(fill: Fill) -> type[BaseModel]:
    """A learner's MyProductOlap whose before-validator is `fill(cls, data, info)`."""

    class MyCdcBase(BaseModel):
        @model_validator(mode="before")
        @classmethod
        def fill_defaults_for_deletes(cls, data: Any, info: ValidationInfo) -> Any:
            return fill(cls, data, info)

    class MyProductOlap(MyCdcBase, ProductColumns):
        pass

    return MyProductOlap


def is_delete(info: ValidationInfo) -> bool:
    return (info.context or {}).get("operation") == "delete"


def defaults(cls: type[BaseModel], data: dict[str, Any], unwrap: Callable = olap.unwrap) -> dict:
    """A copy of `data`, each None filled with TYPE_DEFAULTS of the unwrapped annotation."""
    filled = dict(data)
    for name, field in cls.model_fields.items():
        if filled.get(name) is None:
            filled[name] = TYPE_DEFAULTS[unwrap(field.annotation)[0]]
    return filled


def right(cls, data, info):  # type: ignore[no-untyped-def]
    return defaults(cls, data) if is_delete(info) else data


def every_event(cls, data, info):  # type: ignore[no-untyped-def]
    return defaults(cls, data)  # the seed's trap: an update's NULL becomes ''


def never(cls, data, info):  # type: ignore[no-untyped-def]
    return data


def operation_from_the_payload(cls, data, info):  # type: ignore[no-untyped-def]
    return defaults(cls, data) if data.get("operation") == "delete" else data


def in_place(cls, data, info):  # type: ignore[no-untyped-def]
    if is_delete(info):
        data.update(defaults(cls, data))
    return data


def union_only_skipping(cls, data, info):  # type: ignore[no-untyped-def]
    """The seed's way: look the unwrapped type up, skip what is not in the map."""
    if not is_delete(info):
        return data
    filled = dict(data)
    for name, field in cls.model_fields.items():
        plain = seed_unwrap(field.annotation)
        if filled.get(name) is None and plain in TYPE_DEFAULTS:
            filled[name] = TYPE_DEFAULTS[plain]
    return filled


def union_only_indexing(cls, data, info):  # type: ignore[no-untyped-def]
    """Like the seed, but TYPE_DEFAULTS[...]: an unknown spelling raises KeyError."""
    if not is_delete(info):
        return data
    return defaults(cls, data, unwrap=lambda annotation: (seed_unwrap(annotation),))


@pytest.fixture(scope="module")
def exercised_product(lab: Stack) -> int:
    """The lesson's fresh product: inserted with a description, set to NULL, deleted."""
    product = run_sql(
        lab,
        "INSERT INTO product (name, category, price, description) "
        "VALUES ('Tea towel', 'linen', 9.50, 'striped') RETURNING id",
    )[0][0]
    run_sql(lab, "UPDATE product SET description = NULL WHERE id = :id", id=product)
    run_sql(lab, "DELETE FROM product WHERE id = :id", id=product)
    assert wait_for(lambda: _delete_on_topic(lab, product)), "capture did not publish the delete"
    return product


def test_lesson05_the_delete_only_validator_passes(
    lab: Stack, exercised_product: int, capsys: pytest.CaptureFixture[str]
) -> None:
    lesson05.check_delete_only_validator(learners_model(right), lab, exercised_product)
    assert "✓ MyProductOlap fills the delete" in capsys.readouterr().out


def test_lesson05_fails_on_the_placeholder_and_on_what_is_not_a_product_model(
    lab: Stack, exercised_product: int
) -> None:
    check = lesson05.check_delete_only_validator
    fails(check, None, lab, exercised_product, says="placeholder")
    fails(check, right, lab, exercised_product, says="not a pydantic model class")
    fails(check, oltp.CustomerBase, lab, exercised_product, says="has no column(s) id, price")


@pytest.mark.parametrize(
    ("fill", "says"),
    [
        (every_event, "your model turned it into ''"),
        (never, "failed validation, so the router would dead-letter it"),
        (operation_from_the_payload, "reads the operation from the payload"),
        (in_place, "changed the caller's dict"),
    ],
    ids=["defaults for every event", "no defaults", "operation from the payload", "in place"],
)
def test_lesson05_fails_on_a_typical_wrong_validator(
    lab: Stack, exercised_product: int, fill: Fill, says: str
) -> None:
    fails(lesson05.check_delete_only_validator, learners_model(fill), lab, exercised_product,
          says=says)  # fmt: skip


@pytest.mark.parametrize(
    ("fill", "says"),
    [
        (union_only_skipping, "description (X | None) stayed None"),
        (union_only_indexing, "did not unwrap that spelling of None"),
    ],
    ids=["skips what it cannot unwrap", "indexes what it cannot unwrap"],
)
def test_lesson05_a_validator_that_unwraps_only_typing_union(
    lab: Stack, exercised_product: int, fill: Fill, says: str,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """Wrong up to Python 3.13, where `str | None` is a types.UnionType; right from 3.14 on."""
    model = learners_model(fill)
    if ONE_UNION_TYPE:
        lesson05.check_delete_only_validator(model, lab, exercised_product)
        assert "✓" in capsys.readouterr().out
    else:
        failed = fails(lesson05.check_delete_only_validator, model, lab, exercised_product,
                       says=says)  # fmt: skip
        assert "types.UnionType" in failed.problem


def test_lesson05_fails_without_the_events_of_the_product(lab: Stack) -> None:
    fails(
        lesson05.check_delete_only_validator, learners_model(right), lab, 10_000_000,
        says="no insert / update / delete event",
    )  # fmt: skip


VERDICTS = pd.DataFrame(
    {"table": ["customer", "product", "order", "orderitem"],
     "validates?": [False, False, True, True]}
)  # fmt: skip


@pytest.mark.parametrize(
    ("prediction", "right_one", "says"),
    [
        ({"order", "orderitem"}, True, "✓ You predicted"),
        (["OrderItem", "order"], True, "✓ You predicted"),
        (set(), False, "redeclare their numbers with ge=0"),
        ({"customer", "product", "order", "orderitem"}, False, "rules of the *Base classes"),
        ({"product", "order", "orderitem"}, False, "name keeps min_length=1"),
        (None, False, "holds no prediction yet"),
    ],
    ids=["right", "right, spelled otherwise", "none", "all", "product too", "placeholder"],
)
def test_lesson05_the_prediction_gets_its_explanation(
    prediction: object, right_one: bool, says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    lesson05.reveal_accepting(prediction, VERDICTS)  # never raises
    out = capsys.readouterr().out
    assert says in out and ("✓ You predicted" in out) == right_one
    assert right_one or "['order', 'orderitem']" in out, "a wrong prediction sees the answer"


def _delete_on_topic(stack: Stack, product: int) -> bool | None:
    events = topic_events(stack, "product")
    found = events[(events["key"] == f"product:{product}") & (events["operation"] == "delete")]
    return True if not found.empty else None
