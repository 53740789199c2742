"""Self-check of lesson 08: after a type change at the source, the ClickHouse column has the
router's model type again (not only the values), and the freight shipment is there."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from cdc_kit import olap
from cdc_kit.checks.common import (
    CheckFailed,
    parked_letters,
    passed,
    require_answer,
    self_check,
    show_solution,
)
from cdc_kit.warehouse import row_versions, table_columns

TABLE = "lesson08_shipment"
MODIFY = f"ch.command('ALTER TABLE {TABLE} MODIFY COLUMN cost Decimal(10, 2)')"
READ_HINT = (  # what the learner runs, shown as text
    f"SELECT cost FROM {TABLE} FINAL WHERE id = {{id:UInt64}} "  # noqa: S608
    "with parameters={'id': freight_id}"
)


@self_check
def check_cost_column(
    stack: Any, router: Any, freight_id: int, freight_cost: Decimal, answer: Any
) -> None:
    """Nothing of the freight row is parked, the ClickHouse column has the router's model type
    for `cost`, the row is in ClickHouse (FINAL) with its cost, and `answer` is that cost."""
    require_answer(
        answer,
        "freight_cost_in_clickhouse",
        f"change the column ({MODIFY}), then read it back: {READ_HINT}",
    )
    model = router.registry.get(TABLE)
    model_type = olap.column_types(model)["cost"] if model is not None else None
    ch = stack.clickhouse()
    database = stack.settings.clickhouse_database
    column_type = table_columns(ch, database, TABLE).get("cost")
    parked = parked_letters(router, TABLE, [freight_id])
    if parked:
        _, stage, reason = parked[-1]
        if model_type == "Decimal(6, 2)":
            raise CheckFailed(
                f"the freight event is still parked at stage {stage} ({reason}): the router's "
                "model of the table still allows 6 digits",
                "router.register(ShipmentWide), then router.replay_dead_letters()",
            )
        raise CheckFailed(
            f"the freight event is still parked at stage {stage} ({reason})",
            "router.replay_dead_letters() routes it again with the model registered now",
        )
    if column_type != model_type:
        raise CheckFailed(
            f"ClickHouse's column cost is {column_type}, the router's model says {model_type}. "
            "A Decimal(6, 2) is stored in 32 bits and ClickHouse only checks that size, so a "
            "five-digit cost fits by accident; over 21,474,836.47 it would be refused",
            f"change the column's type as a person would: {MODIFY}",
        )
    final = row_versions(ch, database, TABLE, freight_id, ["cost"], final=True)
    if final.empty:
        raise CheckFailed(
            f"shipment {freight_id} is neither in ClickHouse (FINAL) nor parked",
            "router.catch_up() routes what is on the topic",
        )
    stored = final["cost"].iloc[0]
    if stored != freight_cost:
        raise CheckFailed(
            f"ClickHouse has the cost {stored} for shipment {freight_id}, PostgreSQL "
            f"{freight_cost}",
            "router.catch_up(), then read it again",
        )
    try:
        given = Decimal(str(answer))
    except InvalidOperation:
        raise CheckFailed(
            f"freight_cost_in_clickhouse is {answer!r}, not a cost", READ_HINT
        ) from None
    if given != stored:
        raise CheckFailed(
            f"freight_cost_in_clickhouse is {given}, but ClickHouse holds {stored}", READ_HINT
        )
    passed(
        f"shipment {freight_id} arrived with cost {stored}; ClickHouse's column and the model "
        f"agree on {column_type}; nothing of it is parked"
    )


def solution() -> None:
    """Show a worked solution of this lesson's build exercise."""
    show_solution(__name__)
