"""Lesson 04's exercises: what the delete marker of a delete under FULL holds (a prediction),
and the delete marker of a freshly deleted product, read from ClickHouse (only it holds one)."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import text

from cdc_kit.checks.common import (
    CheckFailed,
    as_lsn_int,
    as_word,
    both_forms,
    judge_prediction,
    passed,
    self_check,
    show_solution,
)
from cdc_kit.warehouse import row_versions

#: The columns of a product's delete marker the check compares (others are the router's too).
COMPARED = ("name", "category", "price", "is_deleted", "lsn")


def _versions(stack: Any, product_id: int) -> Any:
    """Every stored version of a product in ClickHouse (no FINAL), oldest first."""
    return row_versions(
        stack.clickhouse(), stack.settings.clickhouse_database, "product", product_id,
        ["name", "category", "price"],
    )  # fmt: skip


def _delete_marker(versions: Any) -> dict[str, Any] | None:
    """The newest is_deleted = 1 version, as column -> value (None: there is none)."""
    if versions.empty:  # no row at all (an empty result may come without its columns)
        return None
    markers = versions[versions["is_deleted"] == 1]
    if markers.empty:
        return None
    return {column: _plain(value) for column, value in markers.iloc[-1].to_dict().items()}


def _plain(value: Any) -> Any:
    """A numpy number (as a DataFrame holds it) -> the Python number; anything else as is."""
    return value.item() if hasattr(value, "item") and not isinstance(value, str) else value


def _name_kind(name: Any, old_name: str) -> str:
    if name is None:
        return "null"
    if name == "":
        return "empty"
    return "old" if name == old_name else repr(name)


def reveal_full_marker_name(prediction: Any, stack: Any, product_id: int, old_name: str) -> None:
    """Feedback on the prediction: what `name` does the delete marker of a delete under FULL
    hold in ClickHouse?"""
    marker = _delete_marker(_versions(stack, product_id))
    if marker is None:  # a reveal never fails: it says what to do
        print(f"· ClickHouse holds no delete marker of product {product_id} yet: run the cell "
              "again (it routes first)")
        return
    actual = _name_kind(marker["name"], old_name)
    judge_prediction(
        prediction,
        actual,
        name="predicted_full_marker_name",
        why=(
            f"Under FULL the delete event carried the old row, {old_name!r} included; the OLAP "
            "model fills a type default only where an event says null, so the delete marker "
            "keeps the old values. Under DEFAULT the same columns hold type defaults ('', 0; NULL "
            "in the one Nullable column)."
        ),
        normalise=as_word,
        wrong={
            "empty": (
                "The router does not blank a delete: it fills defaults only where the event "
                "has null, and FULL left no column null."
            ),
            "null": (
                "`name` is a String column, not Nullable(String): ClickHouse cannot store NULL "
                "there (step 7 says why the columns stay so)."
            ),
        },
    )


# ---- the build exercise: a delete marker, read from ClickHouse ----------------------------------
READ_HINTS = (
    "Which rows of `product` does a read with FINAL leave out?",
    "Step 6 reads every version of a row, without FINAL; keep the one with is_deleted = 1, "
    "and take its row as a dict (QueryResult.first_item gives one)",
)


def _as_row(answer: Any) -> dict[str, Any] | None:
    """A dict, a pandas Series or a one-row DataFrame -> column -> value; None if it is none."""
    if isinstance(answer, Mapping):
        return dict(answer)
    if hasattr(answer, "to_dict") and hasattr(answer, "columns"):  # a DataFrame
        rows = answer.to_dict("records")
        return rows[0] if len(rows) == 1 else ({} if not rows else None)
    if hasattr(answer, "to_dict"):  # a Series
        return answer.to_dict()
    return None


def _same(column: str, answer: Any, stored: Any) -> bool:
    answer = _plain(answer)
    if column == "lsn":
        try:
            return as_lsn_int(answer, "delete_marker['lsn']") == stored
        except CheckFailed:
            return False
    if column == "price":
        try:
            return Decimal(str(answer)) == Decimal(str(stored))
        except (InvalidOperation, ValueError):
            return False
    return bool(answer == stored)


@self_check
def check_delete_marker(stack: Any, product_id: int, delete_marker: Any) -> None:
    """The product is gone from PostgreSQL, ClickHouse holds its delete marker, and
    `delete_marker` is that row as ClickHouse stores it."""
    if delete_marker is Ellipsis:
        raise CheckFailed(
            "`delete_marker` still holds the placeholder (...)",
            (
                "What does a delete leave in ClickHouse, and how do you get there from a DELETE "
                "in PostgreSQL?",
                "DELETE the product in PostgreSQL, route with router.catch_up(), then read its "
                "rows in ClickHouse the way step 6 does",
            ),
        )
    with stack.pg_engine().connect() as conn:
        still_there = conn.execute(
            text("SELECT count(*) FROM product WHERE id = :id"), {"id": product_id}
        ).scalar_one()
    if still_there:
        raise CheckFailed(
            f"product {product_id} still exists in PostgreSQL",
            (
                "Where does a delete marker start?",
                "a DELETE of target_id inside `with engine.begin() as db:` (step 2 does one)",
            ),
        )
    versions = _versions(stack, product_id)
    marker = _delete_marker(versions)
    if marker is None:
        raise CheckFailed(
            f"ClickHouse has no delete marker (is_deleted = 1) for product {product_id} yet",
            ("Who carries the delete from the topic to ClickHouse?", "router.catch_up()"),
        )
    row = _as_row(delete_marker)
    if delete_marker is None or row == {}:
        raise CheckFailed(
            f"`delete_marker` is {delete_marker!r}: no row came back. A read with FINAL finds "
            f"nothing for product {product_id}: FINAL hides a key whose newest version is a "
            "delete marker",
            READ_HINTS,
        )
    if row is None:
        raise CheckFailed(
            f"`delete_marker` is a {type(delete_marker).__name__}, not one row as a dict "
            "(column -> value)",
            READ_HINTS,
        )
    nulls = [column for column in ("name", "category", "price") if column in row and
             row[column] is None and marker[column] is not None]  # fmt: skip
    if nulls:
        raise CheckFailed(
            f"`delete_marker` has None in {', '.join(nulls)}: that is what the delete event on "
            "the topic carries. ClickHouse's delete marker holds the values the router filled in",
            (
                "Which stop of the pipeline holds the delete marker: the topic or ClickHouse?",
                "read the row from ClickHouse (the table `product`), not the event's payload",
            ),
        )
    missing = [column for column in COMPARED if column not in row]
    if missing:
        raise CheckFailed(
            f"`delete_marker` has no {', '.join(missing)}: read the whole row as ClickHouse "
            "stores it",
            ("Which columns does ClickHouse add to the source's?", "SELECT * gives all of them"),
        )
    live_lsns = {int(lsn) for lsn in versions[versions["is_deleted"] == 0]["lsn"]}
    if _plain(row["is_deleted"]) == 0 or any(_same("lsn", row["lsn"], lsn) for lsn in live_lsns):
        raise CheckFailed(
            f"`delete_marker` is a live version of product {product_id} (is_deleted = "
            f"{row['is_deleted']}), written before the delete",
            (
                "Which column tells a delete marker from a live row?",
                "keep the version with is_deleted = 1 (step 6 shows both kinds)",
            ),
        )
    wrong = [column for column in COMPARED if not _same(column, row[column], marker[column])]
    if wrong:
        shown = ", ".join(f"{c}: {row[c]!r}, ClickHouse has {marker[c]!r}" for c in wrong)
        raise CheckFailed(
            f"`delete_marker` differs from the delete marker of product {product_id}: {shown}",
            (
                "Did you read the row of target_id, after routing its delete?",
                "read product target_id's row with is_deleted = 1, without FINAL",
            ),
        )
    filled = ", ".join(f"{c} = {marker[c]!r}" for c in ("name", "category", "price"))
    passed(
        f"product {product_id}'s delete marker: {filled}, is_deleted = 1, lsn "
        f"{both_forms(marker['lsn'])}; the topic's delete event had null in those columns, and "
        f"FINAL shows no row for it (ClickHouse holds {len(versions)} version(s) now)"
    )


def solution() -> None:
    """Show a worked solution of this lesson's build exercise."""
    show_solution(__name__)
