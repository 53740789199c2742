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


# ---- lesson 00: the event of a fresh customer --------------------------------------------------
def test_lesson00_the_lsn_of_the_customers_insert_event(
    lab: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    name = f"Check Customer {uuid.uuid4().hex[:6]}"
    run_sql(
        lab,
        "INSERT INTO customer (email, name, country, city) VALUES (:email, :name, 'GB', 'Leeds')",
        email=f"{uuid.uuid4().hex[:8]}@example.com", name=name,
    )  # fmt: skip

    def my_event() -> dict | None:
        events = topic_events(lab, "customer")
        mine = events[events["payload"].map(lambda row: row.get("name") == name)]
        return None if mine.empty else mine.iloc[-1].to_dict()

    event = wait_for(my_event)
    assert event is not None, "capture did not publish the insert"

    lesson00.check_event_lsn(lab, name, event["lsn"])
    lesson00.check_event_lsn(lab, name, str_to_lsn(event["lsn"]))  # the integer form too
    assert "✓" in capsys.readouterr().out
    fails(lesson00.check_event_lsn, lab, name, None, says="placeholder")

    others = topic_events(lab, "customer")
    other_lsn = others[others["payload"].map(lambda row: row.get("name") != name)].iloc[-1]["lsn"]
    fails(lesson00.check_event_lsn, lab, name, other_lsn, says="another event")
    current = run_sql(lab, "SELECT pg_current_wal_lsn()::text")[0][0]
    fails(lesson00.check_event_lsn, lab, name, current, says="no event on the topic")


# ---- lesson 01: a fresh price, read back with FINAL --------------------------------------------
def test_lesson01_a_price_read_from_clickhouse_with_final(
    lab: Stack, router: Router, capsys: pytest.CaptureFixture[str]
) -> None:
    product = new_product(lab)
    router.catch_up()
    ch = lab.clickhouse()
    ch.command("SYSTEM STOP MERGES product")  # keep both versions for the no-FINAL answer
    try:
        target = Decimal(random.randint(100, 9999)) / 100
        run_sql(lab, "UPDATE product SET price = :p WHERE id = :id", p=target, id=product)
        router.catch_up()
        price, lsn = ch.query(
            "SELECT price, lsn FROM product FINAL WHERE id = {id:UInt64}",
            parameters={"id": product},
        ).result_rows[0]
        lesson01.check_price(lab, product, target, price, lsn)
        assert "✓" in capsys.readouterr().out
        fails(lesson01.check_price, lab, product, target, None, None, says="placeholder")

        oldest = ch.query(  # what a read without FINAL may return: the first version stored
            "SELECT price, lsn FROM product WHERE id = {id:UInt64} ORDER BY lsn LIMIT 1",
            parameters={"id": product},
        ).result_rows[0]
        fails(lesson01.check_price, lab, product, target, *oldest, says="older version")

        # Updated in PostgreSQL but never routed, and the price read from PostgreSQL:
        second = target + 1
        run_sql(lab, "UPDATE product SET price = :p WHERE id = :id", p=second, id=product)
        from_postgres = run_sql(lab, "SELECT price FROM product WHERE id = :id", id=product)[0][0]
        fails(
            lesson01.check_price, lab, product, second, from_postgres, lsn, says="not been routed"
        )
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

    ch.command("DROP TABLE review")
    ch.command(create_table_sql(ReviewOlapSignedIds, database=database))
    fails(lesson02.check_review_table, lab, ReviewOlapSignedIds, says="`id` is Int64")
    ch.command("DROP TABLE review")

    by_product = create_table_sql(ReviewOlap, database=database)
    ch.command(by_product.replace("ORDER BY (`id`)", "ORDER BY (`productId`, `id`)"))
    fails(lesson02.check_review_table, lab, ReviewOlap, says="ordered by productId, id")
    ch.command("DROP TABLE review")


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
