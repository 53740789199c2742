"""Lesson 08: what reaches ClickHouse when PostgreSQL gains a column the model lacks
(prediction), and, after a type change at the source, ClickHouse's column changed to the
model's type, the parked freight replayed and its newest version read back with FINAL (build)."""

from __future__ import annotations

import re
from typing import Any

import pandas as pd
from sqlalchemy import text

from cdc_kit import olap
from cdc_kit.checks.common import (
    CheckFailed,
    judge_prediction,
    parked_letters,
    passed,
    require_answer,
    self_check,
    show_solution,
)
from cdc_kit.warehouse import row_versions, table_columns

TABLE = "lesson08_shipment"
OUTCOMES = ("parked", "routed without it", "routed with it")

ALTER_HINTS = (
    "What does the parked event's reason say about ClickHouse's column and the model?",
    "A person changes a column's type in ClickHouse with ALTER TABLE ... MODIFY COLUMN, sent "
    "with ch.command(...); the reason names the column and the type",
)
REPLAY_HINTS = (
    "The column is right now. What happens to events parked before it changed?",
    "steps 4 and 5 routed the parked events again, with one call on the router",
)
READ_HINTS = (
    "Which read shows one row per shipment, its newest version?",
    "ch.query_df(...) on lesson08_shipment with FINAL, selecting cost and lsn, for the id "
    "freight_id",
)


# ---- prediction: a column added in PostgreSQL only ---------------------------------------------
def added_column_outcome(stack: Any, router: Any, shipment_id: int, column: str) -> str:
    """What became of shipment `shipment_id`, written with `column` that only PostgreSQL has."""
    if parked_letters(router, TABLE, [shipment_id]):
        return "parked"
    ch = stack.clickhouse()
    database = stack.settings.clickhouse_database
    if column not in table_columns(ch, database, TABLE):
        stored = row_versions(ch, database, TABLE, shipment_id, ["id"], final=True)
        return "routed without it" if len(stored) else "not routed yet"
    stored = row_versions(ch, database, TABLE, shipment_id, [column], final=True)
    if stored.empty:
        return "not routed yet"
    return "routed without it" if pd.isna(stored[column].iloc[0]) else "routed with it"


def _outcome(value: Any) -> Any:
    return " ".join(value.lower().split()) if isinstance(value, str) else repr(value)


def reveal_added_column(prediction: Any, stack: Any, router: Any, shipment_id: int) -> None:
    """Parked, routed without the new column, or routed with it: what happened, and why."""
    judge_prediction(
        prediction,
        added_column_outcome(stack, router, shipment_id, "trackingCode"),
        name="predicted_outcome",
        normalise=_outcome,
        why=(
            "The event carries trackingCode, and the model does not declare it. An OLAP model "
            "ignores payload keys it does not declare (that is what lets a source add columns "
            "without breaking anything), and ClickHouse's table has only the model's columns: "
            "the row is routed, the tracking code is dropped, and nothing says so."
        ),
        wrong={
            "parked": "The router parks what it cannot route: an unknown table, a value that "
            "does not fit, a missing column. A column too many fits.",
            "routed with it": "ClickHouse's table has the model's columns only, and the kit "
            "adds a column when the model gains a field (step 3), not when an event does.",
        },
    )


# ---- build: make the column tell the truth ----------------------------------------------------
_DECIMAL = re.compile(r"Decimal\((\d+), (\d+)\)")


def _wrong_type(column_type: str, model_type: str) -> CheckFailed:
    """ClickHouse's column was changed, but not to the model's type."""
    if column_type.startswith("Float"):
        why = (
            "a float cannot hold most amounts of cents exactly (0.10 is stored as "
            "0.1000000000000000055...), and money must add up"
        )
    elif (have := _DECIMAL.fullmatch(column_type)) and (want := _DECIMAL.fullmatch(model_type)):
        why = (
            f"{have[1]} digits, {have[2]} after the point, where the model (like PostgreSQL's "
            f"numeric({want[1]}, {want[2]})) has {want[1]}, {want[2]} after the point"
        )
    else:
        why = "the two must be equal"
    return CheckFailed(
        f"ClickHouse's column cost is {column_type} now, the router's model says {model_type}: "
        f"{why}. While they differ, the router keeps parking the freight",
        (
            "Which type does the parked event's reason ask for?",
            "change the column once more, to exactly the model's type, then replay",
        ),
    )


def _check_column(stack: Any, router: Any, freight_id: int) -> None:
    """ClickHouse's cost column has the model's type, and the freight is no longer parked."""
    model = router.registry.get(TABLE)
    if model is None:
        raise CheckFailed(
            f"the router has no model for {TABLE}",
            "run the lesson from step 1 again: each step registers the model of its version",
        )
    model_type = olap.column_types(model)["cost"]
    columns = table_columns(stack.clickhouse(), stack.settings.clickhouse_database, TABLE)
    column_type = columns.get("cost")
    parked = parked_letters(router, TABLE, [freight_id])
    if model_type == "Decimal(6, 2)" and parked:
        _, stage, reason = parked[-1]
        raise CheckFailed(
            f"the freight event is still parked at stage {stage} ({reason}): the router's "
            "model of the table still allows 6 digits",
            ("Which model did step 6 register for the wider column?",
             "register ShipmentWide again, then replay"),
        )  # fmt: skip
    if column_type != model_type:
        if parked and column_type == "Decimal(6, 2)":
            _, stage, reason = parked[-1]
            raise CheckFailed(
                f"the freight is still parked at stage {stage}: ClickHouse's column cost is "
                f"still {column_type}, the model says {model_type} (the reason: {reason})",
                ALTER_HINTS,
            )
        raise _wrong_type(column_type or "missing", model_type)
    if parked:
        _, stage, reason = parked[-1]
        raise CheckFailed(
            f"ClickHouse's column cost is {column_type}, as the model says, but the freight is "
            f"still parked (stage {stage}: {reason})",
            REPLAY_HINTS,
        )


def _newest(stack: Any, freight_id: int) -> tuple[Any, int]:
    """(cost, lsn) of the freight's newest version in ClickHouse, equal to PostgreSQL's cost."""
    final = row_versions(
        stack.clickhouse(), stack.settings.clickhouse_database, TABLE, freight_id, ["cost"],
        final=True,
    )  # fmt: skip
    if final.empty:
        raise CheckFailed(
            f"shipment {freight_id} is neither in ClickHouse (FINAL) nor parked",
            "router.catch_up() routes what is on the topic",
        )
    cost, lsn = final["cost"].iloc[0], int(final["lsn"].iloc[0])
    with stack.pg_engine().connect() as db:
        query = text(f"SELECT cost FROM {TABLE} WHERE id = :id")  # noqa: S608 - a constant
        source = db.execute(query, {"id": freight_id}).scalar_one_or_none()
    if source != cost:
        raise CheckFailed(
            f"ClickHouse has the cost {cost} for shipment {freight_id}, PostgreSQL {source}",
            "router.catch_up(), then read it again",
        )
    return cost, lsn


def _check_read(answer: Any, freight_id: int, cost: Any, lsn: int) -> None:
    """`answer` is the freight's newest version as ClickHouse shows it with FINAL."""
    require_answer(answer, "freight_in_clickhouse", READ_HINTS)
    if not isinstance(answer, pd.DataFrame):
        raise CheckFailed(
            f"freight_in_clickhouse is a {type(answer).__name__}, not the row as a DataFrame "
            "(with the columns cost and lsn)",
            READ_HINTS,
        )
    if "lsn" not in answer.columns:
        raise CheckFailed(
            f"freight_in_clickhouse has the columns {list(answer.columns)} and no lsn. "
            "PostgreSQL has no such column: the lsn is the version ClickHouse keeps, so a row "
            "read from ClickHouse can show it",
            ("Which of the two databases knows each version's lsn?", *READ_HINTS[1:]),
        )
    if "cost" not in answer.columns:
        raise CheckFailed(
            f"freight_in_clickhouse has the columns {list(answer.columns)} and no cost",
            READ_HINTS,
        )
    if "id" in answer.columns and set(answer["id"]) != {freight_id}:
        raise CheckFailed(
            f"freight_in_clickhouse holds shipments {sorted(set(answer['id']))}, not only "
            f"the freight ({freight_id})",
            ("Which rows does the query keep?", "WHERE id = ... with the freight's id"),
        )
    if len(answer) != 1:
        raise CheckFailed(
            f"{len(answer)} rows for shipment {freight_id}: every version ClickHouse stores "
            "(the first cost and the corrected one), not the one a correct read shows",
            READ_HINTS,
        )
    given_lsn, given_cost = int(answer["lsn"].iloc[0]), answer["cost"].iloc[0]
    if given_lsn != lsn:
        raise CheckFailed(
            f"freight_in_clickhouse is the version with lsn {given_lsn} (cost {given_cost}); "
            f"the newest has lsn {lsn} (cost {cost}): a read without FINAL takes whichever "
            "version comes first",
            READ_HINTS,
        )
    if given_cost != cost:
        raise CheckFailed(
            f"freight_in_clickhouse says cost {given_cost}, ClickHouse holds {cost}", READ_HINTS
        )


@self_check
def check_cost_column(stack: Any, router: Any, freight_id: int, answer: Any) -> None:
    """In the order of the task: ClickHouse's cost column has the router's model type, the
    parked freight was replayed, and `answer` is its newest version read with FINAL."""
    _check_column(stack, router, freight_id)
    cost, lsn = _newest(stack, freight_id)
    _check_read(answer, freight_id, cost, lsn)
    column_type = olap.column_types(router.registry[TABLE])["cost"]
    passed(
        f"shipment {freight_id} arrived with its corrected cost {cost} (lsn {lsn}); "
        f"ClickHouse's column and the model agree on {column_type}; nothing of it is parked"
    )


def solution() -> None:
    """Show a worked solution of this lesson's build exercise."""
    show_solution(__name__)
