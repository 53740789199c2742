"""Self-checks of lesson 01: what FINAL shows for a deleted row, and a fresh price that travels
from PostgreSQL into ClickHouse, read back with FINAL."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import text

from cdc_kit.checks.common import (
    CheckFailed,
    as_lsn_int,
    as_number,
    both_forms,
    judge_prediction,
    passed,
    require_answer,
    self_check,
    show_solution,
)
from cdc_kit.lsn import lsn_to_str
from cdc_kit.warehouse import row_versions

READ_HINTS = (
    "Step 3 read one product from ClickHouse twice: which of the two reads shows only the "
    "newest version?",
    "the read with FINAL in step 3, for second_id; `ch.query(...).result_rows[0]` is its "
    "first row, and it can select price and lsn together",
)
START_HINTS = (
    "Which step above changes a row, which one routes it, and which one reads it back with "
    "FINAL?",
    "step 2 changes a price (here: second_id, target_price), step 1 routes, step 3 reads with "
    "FINAL; `ch.query(...).result_rows[0]` is the first row, and it can hold price and lsn",
)
UPDATE_HINTS = (
    "Which statement changes a row in PostgreSQL, and which product does the exercise name?",
    "step 2 updates first_id inside `with engine.begin() as conn:`; do the same for second_id, "
    "with target_price as a bound parameter",
)
ROUTE_HINTS = (
    "What moves a change from the topic into ClickHouse?",
    "step 1: router.catch_up() writes everything PostgreSQL has committed so far",
)


def reveal_final_rows(predicted_final_rows: Any, stack: Any, product_id: int) -> None:
    """Count the rows FINAL returns for a deleted product; judge the prediction (never raises)."""
    ch = stack.clickhouse()
    database = stack.settings.clickhouse_database
    final = row_versions(ch, database, "product", product_id, ["price"], final=True)
    stored = row_versions(ch, database, "product", product_id, ["price"])
    markers = int((stored["is_deleted"] == 1).sum())
    print(f"A read of product {product_id} with FINAL returned {len(final)} row(s).")
    if final.empty and markers:
        why = (
            "FINAL keeps one version per key, the one with the highest lsn: here the delete "
            "marker. A ReplacingMergeTree(lsn, is_deleted) then leaves a key whose newest version "
            "has is_deleted = 1 out of the answer, so the deleted product is gone. Without "
            "FINAL the marker (and any version not merged yet) is still there."
        )
    elif markers == 0:
        why = (
            "ClickHouse holds no delete marker for this product yet: was the delete routed? "
            "Re-run the cell above, then this one."
        )
    else:
        why = (
            "This server returns the delete marker itself under FINAL (is_deleted = 1 in it): "
            "reads must then add WHERE is_deleted = 0."
        )
    judge_prediction(
        predicted_final_rows,
        len(final),
        name="predicted_final_rows",
        why=why,
        wrong={
            1: "You expected FINAL to show the delete marker, or the last live version. FINAL "
            "picks the newest version per key, and the engine hides a key whose newest version "
            "is a delete marker.",
            2: "You expected both versions. FINAL never returns two versions of one key: that "
            "is what a read without FINAL may do, until the parts merge.",
        },
        normalise=as_number,
    )


def _decimal(value: Any, name: str) -> Decimal:
    try:
        return Decimal(str(value))
    except InvalidOperation:
        raise CheckFailed(f"`{name}` is {value!r}, not a price", READ_HINTS) from None


def _postgres_price(stack: Any, product_id: int) -> Decimal | None:
    with stack.pg_engine().connect() as conn:
        return conn.execute(
            text("SELECT price FROM product WHERE id = :id"), {"id": product_id}
        ).scalar_one_or_none()


def _products_priced(stack: Any, price: Decimal) -> list[int]:
    with stack.pg_engine().connect() as conn:
        return list(
            conn.execute(
                text("SELECT id FROM product WHERE price = :price ORDER BY id"), {"price": price}
            ).scalars()
        )


@self_check
def check_price(
    stack: Any, product_id: int, target_price: Any, clickhouse_price: Any, clickhouse_lsn: Any
) -> None:
    """The product has `target_price` in PostgreSQL and in ClickHouse FINAL, and the answers
    are ClickHouse's newest version (price and lsn; the lsn as text or as the integer)."""
    require_answer(clickhouse_price, "clickhouse_price", START_HINTS)
    require_answer(clickhouse_lsn, "clickhouse_lsn", START_HINTS)
    target = Decimal(str(target_price))
    source_price = _postgres_price(stack, product_id)
    if source_price != target:
        elsewhere = [id for id in _products_priced(stack, target) if id != product_id]
        where = f"; product {elsewhere[0]} has it" if elsewhere else ""
        raise CheckFailed(
            f"PostgreSQL has the price {source_price} for product {product_id}, not "
            f"{target}{where}",
            UPDATE_HINTS,
        )
    ch = stack.clickhouse()
    database = stack.settings.clickhouse_database
    final = row_versions(ch, database, "product", product_id, ["price"], final=True)
    price = _decimal(clickhouse_price, "clickhouse_price")
    if final.empty or final["price"].iloc[0] != target:
        stored = final["price"].iloc[0] if len(final) else "no row"
        if price == target:
            raise CheckFailed(
                f"`clickhouse_price` is {price}, but ClickHouse (FINAL) still has {stored} for "
                f"product {product_id}: your price came from PostgreSQL (or target_price), not "
                "from ClickHouse. The change has not been routed yet",
                ROUTE_HINTS,
            )
        raise CheckFailed(
            f"ClickHouse (FINAL) still has {stored} for product {product_id}: the change has "
            "not been routed yet",
            ROUTE_HINTS,
        )
    final_lsn = int(final["lsn"].iloc[0])
    versions = row_versions(ch, database, "product", product_id, ["price"])
    lsn = as_lsn_int(clickhouse_lsn, "clickhouse_lsn")
    if price == target and lsn == final_lsn:
        passed(
            f"product {product_id} costs {target} in PostgreSQL and in ClickHouse FINAL; newest "
            f"version at lsn {both_forms(final_lsn)}, {len(versions)} version(s) stored"
        )
        return
    older = versions[versions["lsn"] < final_lsn]
    if lsn in set(older["lsn"]) or (price != target and price in set(older["price"])):
        raise CheckFailed(
            f"you read an older version of the row (price {price}, lsn {lsn_to_str(lsn)}): "
            f"ClickHouse holds {len(versions)} versions of product {product_id} until it merges "
            "them, and a read without FINAL may return any of them",
            (
                "Which keyword makes ClickHouse return only the newest version of each row?",
                READ_HINTS[1],
            ),
        )
    if price != target:
        raise CheckFailed(
            f"`clickhouse_price` is {price}, but ClickHouse (FINAL) has {target}", READ_HINTS
        )
    raise CheckFailed(
        f"`clickhouse_lsn` is {lsn_to_str(lsn)}, but no version of product {product_id} in "
        "ClickHouse has that lsn: it is not a version ClickHouse stored",
        ("Which column of the ClickHouse table holds the version?", READ_HINTS[1]),
    )


def solution() -> None:
    """Show a worked solution of this lesson's build exercise."""
    show_solution(__name__)
