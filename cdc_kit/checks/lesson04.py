"""Self-check of lesson 04: the tombstone of a freshly deleted product, read from ClickHouse."""

from __future__ import annotations

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

TOMBSTONE_HINT = (
    "SELECT lsn FROM product WHERE id = {id:UInt64} AND is_deleted = 1 "
    "(no FINAL: FINAL hides deleted rows)"
)


@self_check
def check_tombstone(stack: Any, product_id: int, tombstone_lsn: Any) -> None:
    """The product is gone from PostgreSQL, ClickHouse holds its tombstone, and
    `tombstone_lsn` is that tombstone's lsn."""
    require_answer(
        tombstone_lsn,
        "tombstone_lsn",
        f"delete the product in PostgreSQL, router.catch_up(), then {TOMBSTONE_HINT}",
    )
    with stack.pg_engine().connect() as conn:
        still_there = conn.execute(
            text("SELECT count(*) FROM product WHERE id = :id"), {"id": product_id}
        ).scalar_one()
    if still_there:
        raise CheckFailed(
            f"product {product_id} still exists in PostgreSQL",
            "DELETE FROM product WHERE id = :id inside `with engine.begin() as db:`",
        )
    database = stack.settings.clickhouse_database
    versions = row_versions(stack.clickhouse(), database, "product", product_id, ["name"])
    tombstones = versions[versions["is_deleted"] == 1]
    if tombstones.empty:
        raise CheckFailed(
            f"ClickHouse has no tombstone (is_deleted = 1) for product {product_id} yet",
            "route the delete: router.catch_up()",
        )
    expected = int(tombstones["lsn"].max())
    answer = as_lsn_int(tombstone_lsn, "tombstone_lsn")
    if answer == expected:
        passed(
            f"product {product_id}'s tombstone has lsn {both_forms(expected)}; "
            f"ClickHouse holds {len(versions)} version(s) of the row, FINAL shows none"
        )
        return
    alive = versions[versions["is_deleted"] == 0]
    if answer in set(alive["lsn"]):
        raise CheckFailed(
            f"{lsn_to_str(answer)} is the lsn of a live version of the row (is_deleted = 0), "
            "written before the delete",
            f"the tombstone is the version with is_deleted = 1: {TOMBSTONE_HINT}",
        )
    raise CheckFailed(
        f"{lsn_to_str(answer)} is not the lsn of any version of product {product_id} in ClickHouse",
        TOMBSTONE_HINT,
    )


def solution() -> None:
    """Show a worked solution of this lesson's build exercise."""
    show_solution(__name__)
