"""Self-checks of lesson 02: whether a table class validates when called, and the OLAP model of
`review` with its table, as ClickHouse sees it (types, engine parameters, sorting key)."""

from __future__ import annotations

import re
from typing import Any

from cdc_kit.checks.common import (
    CheckFailed,
    as_yes_no,
    judge_prediction,
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
    "id": "UInt64",
    "productId": "UInt64",
    "verdict": "LowCardinality(String)",
    "rating": "Int64",
    "is_deleted": "UInt8",
    "lsn": "UInt64",
}
CREATE = "olap.create_table_sql(ReviewOlap, database=database), run with ch.command(...)"
MODEL_HINTS = (
    "Which class in step 4 is an OLAP model, and which three classes does it inherit?",
    "ProductOlap in step 4: write ReviewOlap the same way, with the three lines the exercise "
    "lists, then create its table from " + CREATE,
)
RECREATE_HINTS = (
    "Which function of step 5 writes the CREATE TABLE statement of a model?",
    "drop the table (ch.command('DROP TABLE review')) and create it again from "
    + CREATE,  # fmt: skip
)
UNSIGNED_HINTS = (
    "Which `Annotated` hint in step 4 turns an int column into UInt64?",
    'the one ProductOlap puts on `id`; give it to `id` and `productId`, then DROP TABLE review '
    "and create it again from the model",
)
LOW_CARDINALITY_HINTS = (
    "Which `Annotated` hint in step 4 stores a column with few distinct values as a dictionary?",
    "the one ProductOlap puts on `category`; give it to `verdict`, then DROP TABLE review and "
    "create it again from the model",
)


def reveal_table_class(predicted_raises: Any, raised: bool) -> None:
    """Judge the prediction "calling a table class with bad data raises" (never raises)."""
    if raised:
        why = (
            "This SQLModel version validates when a table class is called. The kit's pinned "
            "version does not, and many projects run such versions: validate input with "
            "Product.model_validate(data), which runs the rules in every version."
        )
    else:
        why = (
            "A SQLModel class with table=True does not validate when you call it: the rules of "
            "ProductBase (min_length, gt) run only through Product.model_validate(data), as an "
            "API does (next cell). PostgreSQL would store this product: a VARCHAR takes '' and "
            "a NUMERIC takes -1; those rules live in Python only."
        )
    judge_prediction(
        predicted_raises,
        raised,
        name="predicted_raises",
        why=why,
        wrong={
            True: "You expected the rules of ProductBase to run whenever a Product is made.",
            False: "You expected a table class to skip validation, as SQLModel's table classes "
            "long have.",
        },
        normalise=as_yes_no,
    )


def engine_parts(engine_full: str) -> tuple[str, list[str]]:
    """'ReplacingMergeTree(lsn, is_deleted) ORDER BY id ...' -> ('ReplacingMergeTree',
    ['lsn', 'is_deleted']); an engine without parentheses has no parameters."""
    match = re.match(r"\s*(\w+)\s*(?:\(([^)]*)\))?", engine_full)
    if match is None:
        return engine_full, []
    name, inside = match.group(1), match.group(2) or ""
    return name, [part.strip(" `\"") for part in inside.split(",") if part.strip()]


def _check_engine(engine_full: str, sorting_key: str) -> None:
    name, parameters = engine_parts(engine_full)
    shown = f"{name}({', '.join(parameters)})"
    if name != "ReplacingMergeTree":
        raise CheckFailed(
            f"`review` is a {shown}, not a ReplacingMergeTree: it keeps every version of a row "
            "as a row of its own, and nothing ever replaces them",
            RECREATE_HINTS,
        )
    if not parameters:
        raise CheckFailed(
            "`review` is a ReplacingMergeTree() without a version column: a merge keeps "
            "whichever version was inserted last, so a replayed old event can win, and "
            "nothing marks a delete",
            RECREATE_HINTS,
        )
    if parameters == ["lsn"]:
        raise CheckFailed(
            "`review` is a ReplacingMergeTree(lsn): the newest lsn wins, but without "
            "is_deleted the engine cannot tell a delete marker from a live row, so FINAL "
            "would show deleted reviews",
            RECREATE_HINTS,
        )
    if parameters != ["lsn", "is_deleted"]:
        raise CheckFailed(
            f"`review` is a {shown}, not a ReplacingMergeTree(lsn, is_deleted): the version "
            "must be the change's lsn, and the delete flag is_deleted",
            RECREATE_HINTS,
        )
    if not ordered_by(sorting_key, "id"):
        raise CheckFailed(
            f"`review` is ordered by {sorting_key}, not by the source's primary key (id): "
            "a delete marker carries only the key, so it would not replace the row it deletes",
            RECREATE_HINTS,
        )


def _check_column(name: str, wanted: str, found: str | None) -> None:
    if found == wanted:
        return
    if found is None:
        raise CheckFailed(
            f"ClickHouse column `{name}` is missing",
            ("Which classes give ReviewOlap its columns?", MODEL_HINTS[1]),
        )
    if wanted == "UInt64" and found == "Int64":
        raise CheckFailed(
            f"ClickHouse column `{name}` is Int64, a signed integer: ids are never negative, "
            "and the kit stores them as UInt64",
            UNSIGNED_HINTS,
        )
    if wanted == "LowCardinality(String)" and found == "String":
        raise CheckFailed(
            f"ClickHouse column `{name}` is a plain String: a column with a few distinct values "
            '("love it", "fine", "meh") is stored as LowCardinality(String)',
            LOW_CARDINALITY_HINTS,
        )
    raise CheckFailed(
        f"ClickHouse column `{name}` is {found}, not {wanted}",
        (f"Which line of ReviewOlap (or of ReviewBase) decides the type of `{name}`?",
         "compare olap.describe(ReviewOlap) with olap.describe(olap.ProductOlap)"),
    )  # fmt: skip


@self_check
def check_review_table(stack: Any, model: Any) -> None:
    """`model` is a CDC OLAP model of `review`, and ClickHouse holds its table, made from it:
    the column types the exercise asks for, ReplacingMergeTree(lsn, is_deleted), ORDER BY id."""
    require_answer(model, "ReviewOlap", MODEL_HINTS)
    if not isinstance(model, type) or not issubclass(model, CdcOlapModelBase):
        raise CheckFailed(
            f"ReviewOlap is {model!r}, not a class that inherits CdcOlapModelBase",
            ("What does ProductOlap inherit in step 4?", MODEL_HINTS[1]),
        )
    if not issubclass(model, CdcFields):
        raise CheckFailed(
            "ReviewOlap has no is_deleted and lsn columns",
            ("Which class in step 4 brings the two CDC columns?", "CdcFields: inherit it too"),
        )
    if getattr(model, "__table__", None) != "review":
        raise CheckFailed(
            f"ReviewOlap.__table__ is {getattr(model, '__table__', None)!r}, not 'review'",
            ("How does an OLAP model name its table?", 'the line __table__ = "review"'),
        )
    ch = stack.clickhouse()
    database = stack.settings.clickhouse_database
    order = table_order(ch, database, "review")
    if order is None:
        raise CheckFailed(
            "ClickHouse has no table `review`",
            ("What turns a model into a table in step 5?", "create it from " + CREATE),
        )
    _check_engine(*order)
    columns = table_columns(ch, database, "review")
    for name, wanted in EXPECTED.items():
        _check_column(name, wanted, columns.get(name))
    if column_types(model) != columns:  # type: ignore[arg-type]  # checked a model above
        raise CheckFailed(
            "the ClickHouse table `review` was not made from this ReviewOlap (the columns differ)",
            RECREATE_HINTS,
        )
    passed(
        f"ClickHouse table review: {', '.join(f'{n} {t}' for n, t in columns.items())}; "
        "ReplacingMergeTree(lsn, is_deleted) ORDER BY id"
    )


def solution() -> None:
    """Show a worked solution of this lesson's build exercise."""
    show_solution(__name__)
