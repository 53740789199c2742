"""Self-check of lesson 06: the table `refund` is registered with the router, and every refund
written this run is in ClickHouse (FINAL), equal to PostgreSQL, none left parked."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from clickhouse_connect.driver.binding import quote_identifier
from sqlalchemy import text

from cdc_kit import olap
from cdc_kit.checks.common import (
    CheckFailed,
    parked_letters,
    passed,
    require_answer,
    self_check,
    show_solution,
)
from cdc_kit.warehouse import table_exists

TABLE = "refund"
MODEL_HINT = (
    "class RefundOlap(CdcOlapModelBase, RefundBase, CdcFields): with __table__ = \"refund\" "
    "and the three annotated columns, like PaymentOlap in step 6"
)
REGISTER_HINT = "router.register(RefundOlap): the router looks tables up in its own registry"
REPLAY_HINT = "router.replay_dead_letters() routes the parked refunds again, now with a model"


def parked_refunds(router: Any, refund_ids: list[int]) -> list[tuple[str, str, str]]:
    """(key, stage, reason) of this run's refunds that the router parked and did not replay."""
    return parked_letters(router, TABLE, refund_ids)


def _clickhouse_refunds(stack: Any, refund_ids: list[int]) -> dict[int, tuple] | None:
    """id -> (paymentId, amount, reason) in ClickHouse FINAL; None if there is no table."""
    database = stack.settings.clickhouse_database
    ch = stack.clickhouse()
    if not table_exists(ch, database, TABLE):
        return None
    rows = ch.query(
        f"SELECT id, paymentId, amount, reason FROM {quote_identifier(database)}."  # noqa: S608
        f"{quote_identifier(TABLE)} FINAL WHERE id IN {{ids:Array(UInt64)}}",
        parameters={"ids": list(refund_ids)},
    ).result_rows
    return {row[0]: (row[1], Decimal(row[2]), row[3]) for row in rows}


def _postgres_refunds(stack: Any, refund_ids: list[int]) -> dict[int, tuple]:
    with stack.pg_engine().connect() as db:
        rows = db.execute(
            text('SELECT id, "paymentId", amount, reason FROM refund WHERE id = ANY(:ids)'),
            {"ids": list(refund_ids)},
        ).all()
    return {row[0]: (row[1], Decimal(row[2]), row[3]) for row in rows}


@self_check
def check_refunds_routed(stack: Any, router: Any, model: Any, refund_ids: list[int]) -> None:
    """`model` is a working OLAP model of `refund`, the router routes `refund` with it, and the
    refunds `refund_ids` (written this run, parked at first) are all in ClickHouse."""
    require_answer(model, "RefundOlap", MODEL_HINT)
    if not isinstance(model, type) or not issubclass(model, olap.CdcOlapModelBase):
        raise CheckFailed(f"RefundOlap is {model!r}, not a CdcOlapModelBase subclass", MODEL_HINT)
    if getattr(model, "__table__", None) != TABLE:
        raise CheckFailed(
            f"RefundOlap.__table__ is {getattr(model, '__table__', None)!r}, not 'refund'",
            'add the line __table__ = "refund" to the class',
        )
    try:
        olap.check_model(model)
    except olap.ModelError as exc:
        raise CheckFailed(f"the router cannot use RefundOlap: {exc}", MODEL_HINT) from None
    registered = router.registry.get(TABLE)
    if registered is None:
        raise CheckFailed(
            "the router has no model for the table `refund`: its events are still parked at "
            "stage lookup",
            REGISTER_HINT,
        )
    if registered is not model:
        raise CheckFailed(
            f"the router routes `refund` with another class ({registered.__name__} defined "
            "earlier), not this RefundOlap",
            "run the exercise cell again: it defines RefundOlap and registers that class",
        )
    parked = parked_refunds(router, refund_ids)
    if parked:
        stages = sorted({stage for _, stage, _ in parked})
        _, stage, reason = parked[-1]
        hint = REPLAY_HINT
        if stages != ["lookup"]:
            hint = f"fix what the reason says, then {REPLAY_HINT}"
        raise CheckFailed(
            f"{len(parked)} of the {len(refund_ids)} refunds are still parked (stage {stage}: "
            f"{reason})",
            hint,
        )
    stored = _clickhouse_refunds(stack, refund_ids)
    if stored is None:
        raise CheckFailed("ClickHouse has no table `refund`", REGISTER_HINT)
    source = _postgres_refunds(stack, refund_ids)
    missing = sorted(set(source) - set(stored))
    if missing:
        raise CheckFailed(
            f"refund(s) {missing} are neither in ClickHouse (FINAL) nor parked",
            "route what is on the topic: router.catch_up()",
        )
    different = [key for key in source if source[key] != stored[key]]
    if different:
        key = different[0]
        raise CheckFailed(
            f"refund {key} is {stored[key]} in ClickHouse but {source[key]} in PostgreSQL",
            "router.catch_up() routes the newest changes",
        )
    passed(
        f"all {len(source)} refunds are in ClickHouse (FINAL), equal to PostgreSQL; none is "
        f"parked; the router routes `refund` with {model.__name__}"
    )


def solution() -> None:
    """Show a worked solution of this lesson's build exercise."""
    show_solution(__name__)
