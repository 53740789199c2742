"""The self-checks of lessons 06-08 against the real stack: the right answer passes; the
placeholder and the typical wrong answers fail, each with a message that says what to try."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated

import pandas as pd
import pytest
from pydantic import Field
from sqlalchemy import text
from sqlmodel import SQLModel

from cdc_kit import olap
from cdc_kit.checks import lesson06, lesson07, lesson08
from cdc_kit.olap import CdcFields, CdcOlapModelBase
from cdc_kit.router import Router
from cdc_kit.stack import Stack
from tests.conftest import fails, run_sql


def fresh_table(stack: Stack, name: str, ddl: str) -> None:
    """The lesson's table, new in PostgreSQL and absent from ClickHouse."""
    stack.clickhouse().command(f"DROP TABLE IF EXISTS {name}")
    run_sql(stack, f"DROP TABLE IF EXISTS {name}")
    run_sql(stack, ddl)


# ---- lesson 06: events of one transaction; refunds routed with the types asked for ---------
class RefundBase(SQLModel):
    paymentId: int
    amount: Decimal = Field(gt=0, max_digits=10, decimal_places=2)
    reason: str = Field(max_length=40)
    createdAt: datetime


class RefundOlap(CdcOlapModelBase, RefundBase, CdcFields):
    __table__ = "refund"
    id: Annotated[int, "uint64"]
    paymentId: Annotated[int, "uint64"]
    reason: Annotated[str, "LowCardinality"]


class RefundOlapDefinedAgain(RefundOlap):
    """The same model from a re-run cell: a new class the router does not route with."""


class RefundOlapPlural(CdcOlapModelBase, RefundBase, CdcFields):
    __table__ = "refunds"  # not the source table's name
    id: Annotated[int, "uint64"]
    paymentId: Annotated[int, "uint64"]
    reason: Annotated[str, "LowCardinality"]


class RefundOlapSigned(CdcOlapModelBase, RefundBase, CdcFields):
    __table__ = "refund"
    id: int  # Int64 in ClickHouse
    paymentId: int
    reason: Annotated[str, "LowCardinality"]


class RefundOlapPlainReason(CdcOlapModelBase, RefundBase, CdcFields):
    __table__ = "refund"
    id: Annotated[int, "uint64"]
    paymentId: Annotated[int, "uint64"]  # reason stays a plain String


def new_refunds(stack: Stack, router: Router) -> list[int]:
    """The notebook's cell before the exercise: start over, write refunds, route (parked)."""
    router.registry.pop("refund", None)
    stack.clickhouse().command("DROP TABLE IF EXISTS refund")
    rows = run_sql(
        stack,
        'INSERT INTO refund ("paymentId", amount, reason) VALUES '
        "(1, 5.00, 'late'), (2, 7.50, 'damaged'), (3, 1.25, 'late') RETURNING id",
    )
    router.catch_up()
    ids = [row[0] for row in rows]
    assert len(lesson06.parked_refunds(router, ids)) == 3, "unregistered refunds are parked"
    return ids


def test_lesson06_refunds_arrive_with_the_asked_types_once_registered_and_replayed(
    lab: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    fresh_table(
        lab,
        "refund",
        'CREATE TABLE refund (id serial PRIMARY KEY, "paymentId" int NOT NULL, '
        "amount numeric(10, 2) NOT NULL, reason varchar(40) NOT NULL, "
        '"createdAt" timestamptz NOT NULL DEFAULT now())',
    )
    router = Router(lab, registry=dict(olap.OLAP_MODELS))
    check = lesson06.check_refunds_routed
    try:
        router.catch_up()
        ids = new_refunds(lab, router)

        fails(check, lab, router, None, ids, says="placeholder")
        router.register(RefundOlapPlural)
        fails(check, lab, router, RefundOlapPlural, ids, says="__table__ is 'refunds'")
        olap.register(RefundOlap, {})  # registered somewhere, but not with this router
        fails(check, lab, router, RefundOlap, ids, says="still parked at stage lookup")

        router.register(RefundOlap)  # registered, not replayed: new events only
        failure = fails(check, lab, router, RefundOlap, ids, says="3 of the 3 refunds are still")
        assert "parked" in failure.hints[0] and "Step 6" in failure.hints[1]
        fails(check, lab, router, RefundOlapDefinedAgain, ids, says="another class")

        router.replay_dead_letters()
        check(lab, router, RefundOlap, ids)
        assert "✓ all 3 refunds" in capsys.readouterr().out

        # Signed ids: the rows arrive, but ClickHouse's columns say Int64.
        ids = new_refunds(lab, router)
        router.register(RefundOlapSigned)
        router.replay_dead_letters()
        failure = fails(check, lab, router, RefundOlapSigned, ids, says="id is Int64: signed")
        assert "cell before the exercise again" in failure.hints[-1]
        # The model put right, but ClickHouse kept the table the first register made.
        router.register(RefundOlap)
        fails(check, lab, router, RefundOlap, ids, says="but ClickHouse's column is still Int64")

        # reason as a plain String.
        ids = new_refunds(lab, router)
        router.register(RefundOlapPlainReason)
        router.replay_dead_letters()
        fails(check, lab, router, RefundOlapPlainReason, ids, says="reason is a plain String")

        # Started over and done right: it passes.
        ids = new_refunds(lab, router)
        router.register(RefundOlap)
        router.replay_dead_letters()
        check(lab, router, RefundOlap, ids)

        # Changed in PostgreSQL and not routed yet: the check says so.
        run_sql(lab, "UPDATE refund SET reason = 'lost' WHERE id = :id", id=ids[0])
        fails(check, lab, router, RefundOlap, ids, says="in ClickHouse but")
    finally:
        router.close()
        run_sql(lab, "DROP TABLE IF EXISTS refund")
        for table in ("refund", "refunds"):
            lab.clickhouse().command(f"DROP TABLE IF EXISTS {table}")


@pytest.mark.parametrize(
    ("prediction", "says"),
    [
        (None, "holds no prediction yet"),
        (5, "✓ You predicted 5: right"),
        ("5", "right"),
        (0, "No value changed, yet"),
        (1, "A transaction is not one event"),
        (2, "Not one per statement"),
    ],
)
def test_lesson06_the_prediction_of_events_says_what_happened(
    lab: Stack, prediction: object, says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    [(before,)] = run_sql(lab, "SELECT pg_current_wal_lsn()")
    with lab.pg_engine().begin() as db:
        customers = (
            db.execute(text("UPDATE customer SET city = city WHERE id <= 3 RETURNING id"))
            .scalars()
            .all()
        )
        orders = (
            db.execute(text('UPDATE "order" SET status = status WHERE id <= 2 RETURNING id'))
            .scalars()
            .all()
        )
    lesson06.reveal_events(prediction, lab, before, {"customer": customers, "order": orders})
    out = capsys.readouterr().out
    assert says in out and "5 events" in out, out


# ---- lesson 07: the newest units without FINAL, a SKU deleted and back under its id -----------
class StockBase(SQLModel):
    sku: str = Field(max_length=40)
    units: int = Field(ge=0)


class StockOlap(CdcOlapModelBase, StockBase, CdcFields):
    __table__ = "lesson07_stock"
    id: Annotated[int, "uint64"]
    sku: Annotated[str, "LowCardinality"]


RIGHT = (
    "SELECT id, argMax(units, lsn) AS units FROM lesson07_stock GROUP BY id "
    "HAVING argMax(is_deleted, lsn) = 0"
)
WRONG = {
    "SELECT id, units FROM lesson07_stock FINAL": "uses FINAL",
    "SELECT id, units FROM lesson07_stock": "every stored version",
    "SELECT id, argMax(units, lsn) AS units FROM lesson07_stock GROUP BY id": "units 0",
    "SELECT id, argMax(units, lsn) AS units FROM lesson07_stock WHERE is_deleted = 0 "
    "GROUP BY id": "WHERE is_deleted = 0 throws the delete markers away",
    "SELECT id, argMax(units, lsn) AS units FROM lesson07_stock GROUP BY id "
    "HAVING max(is_deleted) = 0": "SKU 4 was deleted and listed again",
    "SELECT id, max(units) AS units FROM lesson07_stock GROUP BY id "
    "HAVING argMax(is_deleted, lsn) = 0": "largest",
    "SELECT id, argMax(units, lsn) AS newest FROM lesson07_stock GROUP BY id": "not ['units']",
    "SELECT id, argMax(units, lsn) AS units FROM lesson07_stok GROUP BY id": "refused",
    # No rows: ClickHouse sends no columns either, and the check says so.
    "SELECT id, argMax(units, lsn) AS units FROM lesson07_stock GROUP BY id "
    "HAVING argMax(is_deleted, lsn) = 2": "no rows",
}


def test_lesson07_only_the_query_that_asks_each_skus_newest_row_passes(
    lab: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    ch = lab.clickhouse()
    fresh_table(
        lab,
        "lesson07_stock",
        "CREATE TABLE lesson07_stock (id serial PRIMARY KEY, sku varchar(40) NOT NULL, "
        "units int NOT NULL)",
    )
    run_sql(
        lab,
        "INSERT INTO lesson07_stock (sku, units) "
        "SELECT 'SKU-' || n, 50 FROM generate_series(1, 6) AS n",
    )
    registry = dict(olap.OLAP_MODELS)
    olap.register(StockOlap, registry)
    router = Router(lab, registry=registry, insert_settings={"optimize_on_insert": 0})
    check = lesson07.check_newest_units
    try:
        # The notebook's day, each change in its own batch, merges stopped.
        router.catch_up()
        ch.command("SYSTEM STOP MERGES lesson07_stock")
        for change in (
            "UPDATE lesson07_stock SET units = 100 + id",  # up...
            "UPDATE lesson07_stock SET units = id",  # ...then down: the largest is not the newest
            "DELETE FROM lesson07_stock WHERE id IN (2, 4, 5)",
            "INSERT INTO lesson07_stock (id, sku, units) VALUES (4, 'SKU-4', 3)",  # 4 is back
        ):
            run_sql(lab, change)
            router.catch_up()
        relisted, discontinued = 4, [2, 5]

        check(lab, RIGHT, relisted, discontinued)
        assert "✓ newest_sql returns the 4 SKUs" in capsys.readouterr().out
        fails(check, lab, None, relisted, discontinued, says="placeholder")
        fails(check, lab, ["SELECT 1"], relisted, discontinued, says="not the text of a query")
        for sql, says in WRONG.items():
            fails(check, lab, sql, relisted, discontinued, says=says)

        # Changed in PostgreSQL, not routed: the check says so instead of blaming the query.
        run_sql(lab, "UPDATE lesson07_stock SET units = 7 WHERE id = 1")
        fails(check, lab, RIGHT, relisted, discontinued, says="does not match PostgreSQL")
        router.catch_up()
        check(lab, RIGHT, relisted, discontinued)

        # The SKU that came back deleted again by hand: the day is not the cell's any more.
        run_sql(lab, "DELETE FROM lesson07_stock WHERE id = 4")
        router.catch_up()
        fails(check, lab, RIGHT, relisted, discontinued, says="no longer has the day")
        run_sql(lab, "INSERT INTO lesson07_stock (id, sku, units) VALUES (4, 'SKU-4', 3)")
        router.catch_up()

        # Merged with CLEANUP: one live row per key and no delete markers, so the wrong
        # HAVING max(is_deleted) = 0 would pass; the check refuses to judge.
        ch.command("SYSTEM START MERGES lesson07_stock")
        ch.command(
            "ALTER TABLE lesson07_stock MODIFY SETTING "
            "allow_experimental_replacing_merge_with_cleanup = 1"
        )
        ch.command("OPTIMIZE TABLE lesson07_stock FINAL CLEANUP")
        fails(check, lab, RIGHT, relisted, discontinued, says="parts were merged")
    finally:
        router.close()
        ch.command("DROP TABLE IF EXISTS lesson07_stock")
        run_sql(lab, "DROP TABLE IF EXISTS lesson07_stock")


@pytest.mark.parametrize(
    ("prediction", "says"),
    [
        (None, "holds no prediction yet"),
        ((4, 1), "✓ You predicted (4, 1): right"),
        ([4, 1], "right"),
        ((3, 1), "The first version counts too"),
        ((1, 1), "does not change a row in place"),
        ((4, 4), "one row per ORDER BY key"),
        ("four", "✗ You predicted 'four'"),
    ],
)
def test_lesson07_the_prediction_of_versions_says_what_happened(
    prediction: object, says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    lesson07.reveal_versions(prediction, plain=4, final=1)
    out = capsys.readouterr().out
    assert says in out and "Merges are stopped" in out, out


# ---- lesson 08: the freight shipment after a type change ----------------------------------------
class ShipmentNarrow(CdcOlapModelBase, CdcFields):
    __table__ = "lesson08_shipment"
    id: Annotated[int, "uint64"]
    courier: Annotated[str, "LowCardinality"]
    cost: Decimal = Field(max_digits=6, decimal_places=2)


class ShipmentWide(ShipmentNarrow):
    cost: Decimal = Field(max_digits=10, decimal_places=2)


def test_lesson08_the_cost_column_must_be_changed_replayed_and_read_with_final(
    lab: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    ch = lab.clickhouse()
    fresh_table(
        lab,
        "lesson08_shipment",
        "CREATE TABLE lesson08_shipment (id serial PRIMARY KEY, courier varchar(40) NOT NULL, "
        "cost numeric(6, 2) NOT NULL)",
    )
    run_sql(lab, "INSERT INTO lesson08_shipment (courier, cost) VALUES ('DHL', 12.50)")
    router = Router(lab, registry=dict(olap.OLAP_MODELS), insert_settings={"optimize_on_insert": 0})
    router.register(ShipmentNarrow)
    first, corrected = Decimal("54321.00"), Decimal("54123.45")
    check = lesson08.check_cost_column

    def read(shipment: int, final: bool = True) -> pd.DataFrame:
        """The learner's read of a shipment: right with FINAL, every version without."""
        return ch.query_df(
            f"SELECT id, cost, lsn FROM lesson08_shipment {'FINAL' if final else ''} "
            "WHERE id = {id:UInt64} ORDER BY lsn",
            parameters={"id": shipment},
        )

    try:
        router.catch_up()
        # The notebook's step 6: the column widened at the source, a freight and its correction.
        run_sql(lab, "ALTER TABLE lesson08_shipment ALTER COLUMN cost TYPE numeric(10, 2)")
        [(freight,)] = run_sql(
            lab,
            "INSERT INTO lesson08_shipment (courier, cost) VALUES ('Maersk', :cost) RETURNING id",
            cost=first,
        )
        run_sql(lab, "UPDATE lesson08_shipment SET cost = :cost WHERE id = :id",
                cost=corrected, id=freight)  # fmt: skip
        router.catch_up()
        router.register(ShipmentWide)

        # Replayed without changing the column: the router keeps it parked, with the statement
        # in its reason; the check's hints point at it without spelling it out.
        router.replay_dead_letters()
        failure = fails(check, lab, router, freight, None, says="still parked")
        assert "still Decimal(6, 2)" in str(failure) and "MODIFY COLUMN `cost`" in str(failure)
        fails(check, lab, router, freight, None, says="still parked")
        failure = fails(check, lab, router, freight, None, says="still parked")
        assert all("Decimal(10, 2)" not in hint for hint in failure.hints)

        # Changed, but to a type that is not the model's.
        ch.command("ALTER TABLE lesson08_shipment MODIFY COLUMN cost Float64")
        router.replay_dead_letters()
        fails(check, lab, router, freight, None, says="cost is Float64 now")
        ch.command("ALTER TABLE lesson08_shipment MODIFY COLUMN cost Decimal(10, 3)")
        router.replay_dead_letters()
        fails(check, lab, router, freight, None, says="3 after the point")

        # Changed right, not replayed yet.
        ch.command("ALTER TABLE lesson08_shipment MODIFY COLUMN cost Decimal(10, 2)")
        ch.command("SYSTEM STOP MERGES lesson08_shipment")  # keep both versions for the reads
        failure = fails(check, lab, router, freight, None, says="as the model says, but")
        assert "parked" in failure.hints[0]

        router.replay_dead_letters()
        fails(check, lab, router, freight, None, says="placeholder")
        with lab.pg_engine().connect() as db:  # from PostgreSQL: no lsn there
            from_postgres = pd.read_sql(
                text("SELECT id, cost FROM lesson08_shipment WHERE id = :id"), db,
                params={"id": freight},
            )  # fmt: skip
        fails(check, lab, router, freight, from_postgres, says="PostgreSQL has no such column")
        fails(check, lab, router, freight, read(freight, final=False), says="2 rows for shipment")
        fails(check, lab, router, freight, read(freight, final=False).head(1), says="lsn")
        fails(check, lab, router, freight, read(freight, final=False).head(1), says="without FINAL")
        fails(check, lab, router, freight, corrected, says="is a Decimal, not the row")
        everything = ch.query_df("SELECT id, cost, lsn FROM lesson08_shipment FINAL")
        fails(check, lab, router, freight, everything, says="not only the freight")
        check(lab, router, freight, read(freight))
        assert f"✓ shipment {freight} arrived with its corrected cost 54123.45" in (
            capsys.readouterr().out
        )

        # Another freight, parked; the old, narrow model registered again: it stays parked.
        ch.command("SYSTEM START MERGES lesson08_shipment")
        router.register(ShipmentNarrow)
        [(second,)] = run_sql(
            lab,
            "INSERT INTO lesson08_shipment (courier, cost) VALUES ('MSC', 23456.78) RETURNING id",
        )
        router.catch_up()
        router.replay_dead_letters()
        fails(check, lab, router, second, None, says="still allows 6 digits")
        router.register(ShipmentWide)  # registered, not replayed yet
        fails(check, lab, router, second, None, says="still parked")
        router.replay_dead_letters()
        check(lab, router, second, read(second))
    finally:
        router.close()
        ch.command("DROP TABLE IF EXISTS lesson08_shipment")
        run_sql(lab, "DROP TABLE IF EXISTS lesson08_shipment")


@pytest.mark.parametrize(
    ("prediction", "says"),
    [
        (None, "holds no prediction yet"),
        ("routed without it", "✓ You predicted 'routed without it': right"),
        ("Routed  without it ", "right"),
        ("parked", "A column too many fits"),
        ("routed with it", "not when an event does"),
    ],
)
def test_lesson08_the_prediction_of_an_added_column_says_what_happened(
    lab: Stack, prediction: object, says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    fresh_table(
        lab,
        "lesson08_shipment",
        "CREATE TABLE lesson08_shipment (id serial PRIMARY KEY, courier varchar(40) NOT NULL, "
        'cost numeric(6, 2) NOT NULL, "trackingCode" varchar(40))',
    )
    router = Router(lab, registry=dict(olap.OLAP_MODELS))
    router.register(ShipmentNarrow)
    try:
        [(shipment,)] = run_sql(
            lab,
            'INSERT INTO lesson08_shipment (courier, cost, "trackingCode") '
            "VALUES ('DHL', 18.00, 'JJD0099887766') RETURNING id",
        )
        router.catch_up()
        lesson08.reveal_added_column(prediction, lab, router, shipment)
        assert says in capsys.readouterr().out
    finally:
        router.close()
        lab.clickhouse().command("DROP TABLE IF EXISTS lesson08_shipment")
        run_sql(lab, "DROP TABLE IF EXISTS lesson08_shipment")


@pytest.mark.parametrize(
    ("module", "answer"),
    [
        (lesson06, 'Annotated[int, "uint64"]'),
        (lesson06, 'Annotated[str, "LowCardinality"]'),
        (lesson07, "argMax(is_deleted, lsn) = 0"),
        (lesson08, "MODIFY COLUMN cost Decimal(10, 2)"),
        (lesson08, "MODIFY COLUMN `cost` Decimal(10, 2)"),
    ],
    ids=["06 uint64", "06 LowCardinality", "07 HAVING", "08 ALTER", "08 ALTER quoted"],
)
def test_no_check_of_lessons_06_08_spells_out_its_solution(module: object, answer: str) -> None:
    source = Path(module.__file__).read_text()  # type: ignore[attr-defined]
    assert answer not in source, f"{module.__name__} spells out {answer!r}"
