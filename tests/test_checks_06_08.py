"""The self-checks of lessons 06-08 against the real stack: the right answer passes; the
placeholder and the typical wrong answers fail, each with a message that says what to try."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated

import pytest
from pydantic import Field
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


# ---- lesson 06: parked refunds, registered and replayed ----------------------------------------
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


def test_lesson06_refunds_arrive_once_registered_with_the_router_and_replayed(
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
    try:
        router.catch_up()
        rows = run_sql(
            lab,
            'INSERT INTO refund ("paymentId", amount, reason) VALUES '
            "(1, 5.00, 'late'), (2, 7.50, 'damaged'), (3, 1.25, 'late') RETURNING id",
        )
        ids = [row[0] for row in rows]
        router.catch_up()
        assert len(lesson06.parked_refunds(router, ids)) == 3, "unregistered refunds are parked"

        fails(lesson06.check_refunds_routed, lab, router, None, ids, says="placeholder")
        olap.register(RefundOlap, {})  # registered somewhere, but not with this router
        fails(lesson06.check_refunds_routed, lab, router, RefundOlap, ids, says="no model")

        router.register(RefundOlap)  # registered, not replayed: new events only
        failure = fails(
            lesson06.check_refunds_routed, lab, router, RefundOlap, ids, says="still parked"
        )
        assert "replay_dead_letters" in failure.hint
        fails(
            lesson06.check_refunds_routed, lab, router, RefundOlapDefinedAgain, ids,
            says="another class",
        )  # fmt: skip

        router.replay_dead_letters()
        lesson06.check_refunds_routed(lab, router, RefundOlap, ids)
        assert "✓ all 3 refunds" in capsys.readouterr().out
    finally:
        router.close()
        run_sql(lab, "DROP TABLE IF EXISTS refund")
        lab.clickhouse().command("DROP TABLE IF EXISTS refund")


# ---- lesson 07: the newest units, without FINAL -------------------------------------------------
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
    "SELECT id, argMax(units, lsn) AS units FROM lesson07_stock GROUP BY id": "were deleted",
    "SELECT id, argMax(units, lsn) AS units FROM lesson07_stock WHERE is_deleted = 0 "
    "GROUP BY id": "were deleted",
    "SELECT id, max(units) AS units FROM lesson07_stock GROUP BY id "
    "HAVING argMax(is_deleted, lsn) = 0": "largest",
    "SELECT id, argMax(units, lsn) AS newest FROM lesson07_stock GROUP BY id": "not ['units']",
    "SELECT id, argMax(units, lsn) AS units FROM lesson07_stok GROUP BY id": "refused",
    # No rows: ClickHouse sends no columns either, and the check names the SKUs left out.
    "SELECT id, argMax(units, lsn) AS units FROM lesson07_stock GROUP BY id "
    "HAVING argMax(is_deleted, lsn) = 2": "[1, 3, 4, 6] exist but are missing",
}


def test_lesson07_only_the_argmax_query_that_drops_tombstones_passes(
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
    router = Router(lab, registry=registry)
    try:
        router.catch_up()
        ch.command("SYSTEM STOP MERGES lesson07_stock")
        run_sql(lab, "UPDATE lesson07_stock SET units = 100 + id")  # up...
        router.catch_up()
        run_sql(lab, "UPDATE lesson07_stock SET units = id")  # ...then down: max is not newest
        router.catch_up()
        run_sql(lab, "DELETE FROM lesson07_stock WHERE id IN (2, 5)")
        router.catch_up()

        lesson07.check_newest_units(lab, RIGHT)
        assert "✓ newest_sql returns the 4 SKUs" in capsys.readouterr().out
        fails(lesson07.check_newest_units, lab, None, says="placeholder")
        for sql, says in WRONG.items():
            fails(lesson07.check_newest_units, lab, sql, says=says)

        # Changed in PostgreSQL, not routed: the check says so instead of blaming the query.
        run_sql(lab, "UPDATE lesson07_stock SET units = 7 WHERE id = 1")
        fails(lesson07.check_newest_units, lab, RIGHT, says="does not match PostgreSQL")
        router.catch_up()

        # Every SKU deleted: an empty answer would be right and wrong alike.
        run_sql(lab, "DELETE FROM lesson07_stock")
        router.catch_up()
        fails(lesson07.check_newest_units, lab, RIGHT, says="no SKUs left")

        # Merged down to one row per key, no tombstones: a wrong query would pass, so no check.
        ch.command("SYSTEM START MERGES lesson07_stock")
        ch.command(
            "ALTER TABLE lesson07_stock MODIFY SETTING "
            "allow_experimental_replacing_merge_with_cleanup = 1"
        )
        ch.command("OPTIMIZE TABLE lesson07_stock FINAL CLEANUP")
        fails(lesson07.check_newest_units, lab, RIGHT, says="merged")
    finally:
        router.close()
        ch.command("DROP TABLE IF EXISTS lesson07_stock")
        run_sql(lab, "DROP TABLE IF EXISTS lesson07_stock")


# ---- lesson 08: the freight shipment after a type change ----------------------------------------
class ShipmentNarrow(CdcOlapModelBase, CdcFields):
    __table__ = "lesson08_shipment"
    id: Annotated[int, "uint64"]
    courier: Annotated[str, "LowCardinality"]
    cost: Decimal = Field(max_digits=6, decimal_places=2)


class ShipmentWide(ShipmentNarrow):
    cost: Decimal = Field(max_digits=10, decimal_places=2)


def test_lesson08_the_cost_column_must_be_modified_not_only_the_model(
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
    router = Router(lab, registry=dict(olap.OLAP_MODELS))
    router.register(ShipmentNarrow)
    cost = Decimal("54321.00")
    check = lesson08.check_cost_column
    try:
        router.catch_up()
        run_sql(lab, "ALTER TABLE lesson08_shipment ALTER COLUMN cost TYPE numeric(10, 2)")
        [(freight,)] = run_sql(
            lab,
            "INSERT INTO lesson08_shipment (courier, cost) VALUES ('Maersk', :cost) RETURNING id",
            cost=cost,
        )
        router.catch_up()
        fails(check, lab, router, freight, cost, None, says="placeholder")

        # The typical slip: register the wide model and replay, but leave ClickHouse's column
        # narrow. The router refuses to write into it (ClickHouse would take the value without
        # a word: it checks only the 32-bit storage): the row stays parked, with the statement.
        router.register(ShipmentWide)
        router.replay_dead_letters()
        failure = fails(check, lab, router, freight, cost, cost, says="still parked")
        assert "MODIFY COLUMN `cost` Decimal(10, 2)" in str(failure)

        ch.command("ALTER TABLE lesson08_shipment MODIFY COLUMN cost Decimal(10, 2)")
        failure = fails(check, lab, router, freight, cost, cost, says="still parked")
        assert "replay_dead_letters" in failure.hint  # altered, not replayed yet
        router.replay_dead_letters()
        stored = ch.query(
            "SELECT cost FROM lesson08_shipment FINAL WHERE id = {id:UInt64}",
            parameters={"id": freight},
        ).result_rows[0][0]
        check(lab, router, freight, cost, stored)
        assert "✓ shipment" in capsys.readouterr().out
        fails(check, lab, router, freight, cost, Decimal("12.50"), says="ClickHouse holds")

        # Another freight, parked; only the ClickHouse column is changed: it stays parked.
        router.register(ShipmentNarrow)
        [(second,)] = run_sql(
            lab,
            "INSERT INTO lesson08_shipment (courier, cost) VALUES ('MSC', 23456.78) RETURNING id",
        )
        router.catch_up()
        router.replay_dead_letters()
        fails(check, lab, router, second, Decimal("23456.78"), 1, says="still allows 6 digits")
        router.register(ShipmentWide)  # registered, not replayed yet
        failure = fails(
            check, lab, router, second, Decimal("23456.78"), 1, says="still parked"
        )
        assert "replay_dead_letters" in failure.hint
        router.replay_dead_letters()
        check(lab, router, second, Decimal("23456.78"), "23456.78")
    finally:
        router.close()
        ch.command("DROP TABLE IF EXISTS lesson08_shipment")
        run_sql(lab, "DROP TABLE IF EXISTS lesson08_shipment")
