"""Lesson 06: how many events one transaction puts on the topic (prediction), and the table
`refund` routed end to end with the learner's model (build): registered with the router, its
parked refunds replayed, ClickHouse's columns of the types the task asks for, and every refund
written this run in ClickHouse (FINAL), equal to PostgreSQL."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from clickhouse_connect.driver.binding import quote_identifier
from sqlalchemy import text

from cdc_kit import olap
from cdc_kit.checks.common import (
    CheckFailed,
    as_lsn_int,
    as_number,
    judge_prediction,
    parked_letters,
    passed,
    require_answer,
    self_check,
    show_solution,
    wait_for,
)
from cdc_kit.lsn import str_to_lsn
from cdc_kit.peek import recent_events
from cdc_kit.warehouse import table_columns

TABLE = "refund"
#: The ClickHouse column types the exercise asks for, as ClickHouse writes them.
WANTED = {
    "id": "UInt64",
    "paymentId": "UInt64",
    "amount": "Decimal(10, 2)",
    "reason": "LowCardinality(String)",
    "createdAt": "DateTime64(6, 'UTC')",
    "is_deleted": "UInt8",
    "lsn": "UInt64",
}

MODEL_HINTS = (
    "Which class in step 6 is the OLAP model of a new table?",
    "Write RefundOlap like PaymentOlap: the same bases with RefundBase in PaymentBase's place, "
    "and __table__ naming the source table",
)
REGISTER_HINTS = (
    "How did step 6 tell the router about payment?",
    "The router looks tables up in its own registry: register RefundOlap with `router`",
)
REPLAY_HINTS = (
    "Registering changes what happens to new events. What about the refunds parked before?",
    "Step 6 brought the parked payments in with one call on the router",
)
START_AGAIN = (
    "ClickHouse keeps the column types of a table it made: after changing RefundOlap, run the "
    "cell before the exercise again (it drops ClickHouse's refund table and writes new "
    "refunds), then your exercise cell"
)


# ---- prediction: events of one transaction --------------------------------------------------
def transaction_events(
    stack: Any, since: Any, rows: dict[str, list[int]], timeout: float = 10.0
) -> int:
    """Events on the topic for `rows` (table -> ids) at or after the WAL position `since`.

    Capture publishes a transaction once it committed, within milliseconds: wait up to
    `timeout` for one event per row, then count what is there.
    """
    after = as_lsn_int(since, "since")
    keys = {f"{table}:{id}" for table, ids in rows.items() for id in ids}

    def count() -> int:
        events = recent_events(stack, limit=1_000_000)
        return sum(
            1
            for key, lsn in zip(events["key"], events["lsn"], strict=True)
            if key in keys and isinstance(lsn, str) and str_to_lsn(lsn) >= after
        )

    found = wait_for(lambda: n if (n := count()) >= len(keys) else None, timeout, every=0.2)
    return found if found is not None else count()


def reveal_events(prediction: Any, stack: Any, since: Any, rows: dict[str, list[int]]) -> None:
    """How many events the transaction of step 2 put on the topic, and why."""
    events = transaction_events(stack, since, rows)
    touched = " and ".join(f"{len(ids)} rows of {table}" for table, ids in rows.items())
    judge_prediction(
        prediction,
        events,
        name="predicted_events",
        normalise=as_number,
        why=(
            f"The transaction changed {touched}, and capture sends one event per changed "
            f"row: {events} events, each with its own lsn, published together once the "
            "transaction committed. SET city = city changes no value, but PostgreSQL still "
            "writes a new row version, and logical replication sends every one."
        ),
        wrong={
            0: "No value changed, yet each UPDATE wrote new row versions, and those are what "
            "logical replication sends.",
            1: "A transaction is not one event: it is one event per changed row; the commit "
            "only keeps them together and in order.",
            2: "Not one per statement: an UPDATE that changes three rows sends three events.",
        },
    )


# ---- build: refunds routed end to end ---------------------------------------------------------
def parked_refunds(router: Any, refund_ids: list[int]) -> list[tuple[str, str, str]]:
    """(key, stage, reason) of this run's refunds that the router parked and did not replay."""
    return parked_letters(router, TABLE, refund_ids)


def _clickhouse_refunds(stack: Any, refund_ids: list[int]) -> dict[int, tuple]:
    """id -> (paymentId, amount, reason) in ClickHouse FINAL."""
    database = stack.settings.clickhouse_database
    ch = stack.clickhouse()
    result = ch.query(
        f"SELECT id, paymentId, amount, reason FROM {quote_identifier(database)}."  # noqa: S608
        f"{quote_identifier(TABLE)} FINAL WHERE id IN {{ids:Array(UInt64)}}",
        parameters={"ids": list(refund_ids)},
    )
    rows = result.result_rows
    return {row[0]: (row[1], Decimal(row[2]), row[3]) for row in rows}


def _postgres_refunds(stack: Any, refund_ids: list[int]) -> dict[int, tuple]:
    with stack.pg_engine().connect() as db:
        rows = db.execute(
            text('SELECT id, "paymentId", amount, reason FROM refund WHERE id = ANY(:ids)'),
            {"ids": list(refund_ids)},
        ).all()
    return {row[0]: (row[1], Decimal(row[2]), row[3]) for row in rows}


def _check_model(model: Any) -> None:
    """The learner's class is an OLAP model of `refund` the router can use."""
    require_answer(model, "RefundOlap", MODEL_HINTS)
    if not isinstance(model, type) or not issubclass(model, olap.CdcOlapModelBase):
        raise CheckFailed(f"RefundOlap is {model!r}, not a CdcOlapModelBase subclass", MODEL_HINTS)
    table = getattr(model, "__table__", None)
    if table != TABLE:
        raise CheckFailed(
            f"RefundOlap.__table__ is {table!r}, not 'refund': the router looks each event's "
            "metadata.table up by that name, so refund events would find no model",
            (
                "What does an event of the refund table carry in metadata.table?",
                "__table__ names the source table, exactly as PostgreSQL names it",
            ),
        )
    try:
        olap.check_model(model)
    except olap.ModelError as exc:
        raise CheckFailed(f"the router cannot use RefundOlap: {exc}", MODEL_HINTS) from None


def _type_problem(column: str, have: str, want: str, declared: str | None) -> CheckFailed:
    """Why ClickHouse's column `column` is `have`, not `want`, and what to do."""
    if declared == want:
        return CheckFailed(
            f"RefundOlap declares {column} as {want} now, but ClickHouse's column is still "
            f"{have}: the table was made by an earlier register, and the kit never changes a "
            "column's type (lesson 08)",
            (START_AGAIN,),
        )
    if want == "UInt64" and have.startswith("Int"):
        return CheckFailed(
            f"ClickHouse's column {column} is {have}: signed, where the task asks for UInt64 "
            "(an id is never negative, and the type should say so)",
            (
                "Can an id be negative? Which ClickHouse type says it cannot?",
                f"step 6's PaymentOlap declares its id columns so. {START_AGAIN}",
            ),
        )
    if want == "LowCardinality(String)" and have == "String":
        return CheckFailed(
            f"ClickHouse's column {column} is a plain String, where the task asks for "
            "LowCardinality(String): a few distinct values repeated in every row is what "
            "LowCardinality stores as a small dictionary",
            (
                "How many different reasons are there, and how many refunds?",
                f"step 6's PaymentOlap declares method and status so. {START_AGAIN}",
            ),
        )
    return CheckFailed(
        f"ClickHouse's column {column} is {have}, where the task asks for {want}",
        (
            f"Which field of RefundOlap (or of RefundBase) makes the column {column}?",
            f"declare it so that it becomes {want}. {START_AGAIN}",
        ),
    )


def _check_columns(stack: Any, model: type) -> None:
    """ClickHouse's refund table has the column types the task asks for."""
    database = stack.settings.clickhouse_database
    columns = table_columns(stack.clickhouse(), database, TABLE)
    if not columns:
        raise CheckFailed("ClickHouse has no table `refund`", REGISTER_HINTS)
    declared = olap.column_types(model)
    for column, want in WANTED.items():
        have = columns.get(column)
        if have is None:
            raise CheckFailed(
                f"ClickHouse's table refund has no column {column}",
                (f"Does RefundOlap have the field {column}?", START_AGAIN),
            )
        if have != want:
            raise _type_problem(column, have, want, declared.get(column))


@self_check
def check_refunds_routed(stack: Any, router: Any, model: Any, refund_ids: list[int]) -> None:
    """`model` is an OLAP model of `refund`, the router routes `refund` with it, ClickHouse's
    columns have the types the task asks for, and the refunds `refund_ids` (written this run,
    parked at first) are all in ClickHouse, equal to PostgreSQL."""
    _check_model(model)
    registered = router.registry.get(TABLE)
    if registered is None:
        parked = parked_refunds(router, refund_ids)
        raise CheckFailed(
            "the router has no model for the table `refund`: "
            + (f"its {len(parked)} refunds are still parked at stage lookup" if parked else
               "refund events find no model"),
            REGISTER_HINTS,
        )  # fmt: skip
    if registered is not model:
        raise CheckFailed(
            f"the router routes `refund` with another class ({registered.__name__} defined "
            "earlier), not this RefundOlap",
            "run the exercise cell again: it defines RefundOlap and registers that class",
        )
    _check_columns(stack, model)
    parked = parked_refunds(router, refund_ids)
    if parked:
        stages = sorted({stage for _, stage, _ in parked})
        _, stage, reason = parked[-1]
        hints = REPLAY_HINTS
        if stages != ["lookup"]:
            hints = (
                "What does the reason say is wrong?",
                "fix what it names, then bring the parked refunds in as step 6 did",
            )
        raise CheckFailed(
            f"{len(parked)} of the {len(refund_ids)} refunds are still parked (stage {stage}: "
            f"{reason})",
            hints,
        )
    stored = _clickhouse_refunds(stack, refund_ids)
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
        f"parked; the router routes `refund` with {model.__name__}, and ClickHouse's columns "
        "have the types the task asks for"
    )


def solution() -> None:
    """Show a worked solution of this lesson's build exercise."""
    show_solution(__name__)
