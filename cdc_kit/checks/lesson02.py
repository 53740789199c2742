"""Self-check of lesson 02: the OLAP model of `review` and its table, as ClickHouse sees it."""

from __future__ import annotations

from typing import Any

from cdc_kit.checks.common import (
    CheckFailed,
    ordered_by,
    passed,
    require_answer,
    self_check,
    show_solution,
    table_order,
)
from cdc_kit.olap import CdcFields, CdcOlapModelBase, column_types
from cdc_kit.warehouse import table_columns

#: The columns the exercise asks for, with the ClickHouse type each must get.
EXPECTED = {
    "id": ("UInt64", 'id: Annotated[int, "uint64"]'),
    "productId": ("UInt64", 'productId: Annotated[int, "uint64"]'),
    "verdict": ("LowCardinality(String)", 'verdict: Annotated[str, "LowCardinality"]'),
    "rating": ("Int64", "inherit ReviewBase, which declares rating: int"),
    "is_deleted": ("UInt8", "inherit CdcFields"),
    "lsn": ("UInt64", "inherit CdcFields"),
}
CREATE_HINT = "ch.command(olap.create_table_sql(ReviewOlap, database=database))"


@self_check
def check_review_table(stack: Any, model: Any) -> None:
    """`model` is a CDC OLAP model of `review`, and ClickHouse holds its table, made from it."""
    require_answer(
        model,
        "ReviewOlap",
        "write `class ReviewOlap(CdcOlapModelBase, ReviewBase, "
        "CdcFields):` with the three lines of the exercise, then " + CREATE_HINT,
    )
    if not isinstance(model, type) or not issubclass(model, CdcOlapModelBase):
        raise CheckFailed(
            f"ReviewOlap is {model!r}, not a class that inherits CdcOlapModelBase",
            "class ReviewOlap(CdcOlapModelBase, ReviewBase, CdcFields): ...",
        )
    if not issubclass(model, CdcFields):
        raise CheckFailed("ReviewOlap has no is_deleted and lsn columns", "inherit CdcFields too")
    if getattr(model, "__table__", None) != "review":
        raise CheckFailed(
            f"ReviewOlap.__table__ is {getattr(model, '__table__', None)!r}, not 'review'",
            'add the line __table__ = "review" to the class',
        )
    ch = stack.clickhouse()
    database = stack.settings.clickhouse_database
    order = table_order(ch, database, "review")
    if order is None:
        raise CheckFailed("ClickHouse has no table `review`", CREATE_HINT)
    engine, sorting_key = order
    if "ReplacingMergeTree" not in engine or not ordered_by(sorting_key, "id"):
        raise CheckFailed(
            f"`review` is a {engine.split('(')[0]} ordered by {sorting_key}, not a "
            "ReplacingMergeTree ordered by the primary key (id)",
            "drop it (ch.command('DROP TABLE review')) and create it with " + CREATE_HINT,
        )
    columns = table_columns(ch, database, "review")
    for name, (wanted, hint) in EXPECTED.items():
        found = columns.get(name)
        if found != wanted:
            what = "is missing" if found is None else f"is {found}"
            raise CheckFailed(
                f"ClickHouse column `{name}` {what}, not {wanted}",
                f"{hint}; then DROP TABLE review and create it again from the model",
            )
    if column_types(model) != columns:
        raise CheckFailed(
            "the ClickHouse table `review` was not made from this ReviewOlap (the columns differ)",
            "re-run the exercise cell: it must create the table from the model with " + CREATE_HINT,
        )
    passed(
        f"ClickHouse table review: {', '.join(f'{n} {t}' for n, t in columns.items())}; "
        "ReplacingMergeTree(lsn, is_deleted) ORDER BY id"
    )


def solution() -> None:
    """Show a worked solution of this lesson's build exercise."""
    show_solution(__name__)
