"""Self-check of lesson 01: a fresh price travels from PostgreSQL into ClickHouse (FINAL)."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import text

from cdc_kit.checks.common import (
    CheckFailed,
    as_lsn_int,
    both_forms,
    passed,
    require_answer,
    self_check,
    show_solution,
)
from cdc_kit.lsn import lsn_to_str
from cdc_kit.warehouse import row_versions

FINAL_HINT = (
    "SELECT price, lsn FROM product FINAL WHERE id = {id:UInt64} "
    "(with parameters={'id': second_id})"
)


def _decimal(value: Any, name: str) -> Decimal:
    try:
        return Decimal(str(value))
    except InvalidOperation:
        raise CheckFailed(f"`{name}` is {value!r}, not a price", FINAL_HINT) from None


@self_check
def check_price(
    stack: Any, product_id: int, target_price: Any, clickhouse_price: Any, clickhouse_lsn: Any
) -> None:
    """The product has `target_price` in PostgreSQL and in ClickHouse FINAL, and the answers
    are ClickHouse's newest version (price and lsn)."""
    require_answer(clickhouse_price, "clickhouse_price", FINAL_HINT)
    require_answer(clickhouse_lsn, "clickhouse_lsn", FINAL_HINT)
    target = Decimal(str(target_price))
    with stack.pg_engine().connect() as conn:
        source_price = conn.execute(
            text("SELECT price FROM product WHERE id = :id"), {"id": product_id}
        ).scalar_one_or_none()
    if source_price != target:
        raise CheckFailed(
            f"PostgreSQL has the price {source_price} for product {product_id}, not {target}",
            "UPDATE product SET price = :price WHERE id = :id inside `with engine.begin() as "
            "conn:`, with {'price': target_price, 'id': second_id}",
        )
    ch = stack.clickhouse()
    database = stack.settings.clickhouse_database
    final = row_versions(ch, database, "product", product_id, ["price"], final=True)
    if final.empty or final["price"].iloc[0] != target:
        stored = final["price"].iloc[0] if len(final) else "no row"
        raise CheckFailed(
            f"ClickHouse (FINAL) still has {stored} for product {product_id}: the change has "
            "not been routed",
            "router.catch_up() writes what PostgreSQL committed into ClickHouse",
        )
    final_lsn = int(final["lsn"].iloc[0])
    versions = row_versions(ch, database, "product", product_id, ["price"])
    price = _decimal(clickhouse_price, "clickhouse_price")
    lsn = as_lsn_int(clickhouse_lsn, "clickhouse_lsn")
    older = versions[versions["lsn"] < final_lsn]
    if price != target or lsn != final_lsn:
        if lsn in set(older["lsn"]) or (price != target and price in set(older["price"])):
            raise CheckFailed(
                f"you read an older version of the row (price {price}, lsn {lsn_to_str(lsn)}); "
                f"ClickHouse holds {len(versions)} versions until it merges them",
                f"add FINAL to get the newest version: {FINAL_HINT}",
            )
        if price != target:
            raise CheckFailed(
                f"`clickhouse_price` is {price}, but ClickHouse (FINAL) has {target}", FINAL_HINT
            )
        raise CheckFailed(
            f"`clickhouse_lsn` is {lsn_to_str(lsn)}, but the newest version in ClickHouse has "
            f"lsn {lsn_to_str(final_lsn)}",
            f"read the `lsn` column from ClickHouse: {FINAL_HINT}",
        )
    passed(
        f"product {product_id} costs {target} in PostgreSQL and in ClickHouse FINAL; newest "
        f"version at lsn {both_forms(final_lsn)}, {len(versions)} version(s) stored"
    )


def solution() -> None:
    """Show a worked solution of this lesson's build exercise."""
    show_solution(__name__)
