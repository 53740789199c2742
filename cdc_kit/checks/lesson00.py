"""Self-checks of lesson 00: how many events one statement publishes, and the LSN of one of them."""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Integral
from typing import Any

import pandas as pd
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
    topic_events,
    wait_for,
)
from cdc_kit.lsn import lsn_to_str, str_to_lsn

FIND_HINTS = (
    "The exercise names a helper that lists a table's newest events: which of its rows holds "
    "new_name in its payload, and which column holds that event's LSN?",
    "recent_events(stack, limit=5, table='customer') returns a DataFrame: the `payload` column "
    "holds each row as a dict, the `lsn` column each event's own LSN",
)


def _name_of(payload: Any) -> Any:
    return payload.get("name") if isinstance(payload, dict) else None


def _insert_events(stack: Any, names: Sequence[str]) -> pd.DataFrame:
    """The insert events of the customers called `names` on the topic, oldest first."""
    events = topic_events(stack, "customer")
    named = events["payload"].map(_name_of)
    return events[(events["operation"] == "insert") & named.isin(list(names))]


def _wait_for_inserts(stack: Any, names: Sequence[str], count: int) -> pd.DataFrame:
    """The insert events of `names`, once there are `count` of them (or what came in 10 s)."""

    def enough() -> pd.DataFrame | None:
        events = _insert_events(stack, names)
        return events if len(events) >= count else None

    found = wait_for(enough, timeout=10)
    return _insert_events(stack, names) if found is None else found


def reveal_events_per_row(predicted_events: Any, stack: Any, names: Sequence[str]) -> None:
    """Show the events one three-row INSERT published, and judge the prediction (never raises)."""
    names = list(names)
    events = _wait_for_inserts(stack, names, len(names))
    shown = events[["offset", "key", "operation"]].copy()
    shown["name in the payload"] = events["payload"].map(_name_of)
    _display(shown.reset_index(drop=True))
    if len(events) == len(names):
        why = (
            f"Capture publishes one event per changed row: one statement, one transaction, "
            f"{len(names)} rows, {len(names)} events, each keyed by its row's primary key and "
            "carrying that row as its payload. They are released together when the "
            "transaction commits, in the order PostgreSQL wrote them."
        )
    else:
        why = (
            f"Capture has published {len(events)} of the {len(names)} events so far: is it "
            "running (`python -m cdc_kit status`)? Re-run this cell in a moment."
        )
    judge_prediction(
        predicted_events,
        len(events),
        name="predicted_events",
        why=why,
        wrong={
            1: "You counted one event per statement (or per transaction). PostgreSQL's log "
            "records each row it changed, and logical replication decodes it row by row.",
            0: "You expected nothing on the topic until something reads it. Capture publishes "
            "as soon as PostgreSQL commits; the router (lesson 01) only reads the topic.",
        },
        normalise=as_number,
    )


def _display(frame: pd.DataFrame) -> None:
    try:
        from IPython.display import display
    except ImportError:
        print(frame.to_string(index=False))
        return
    display(frame)


def _slot_positions(stack: Any) -> dict[int, str]:
    """LSN -> 'slot x (confirmed_flush_lsn)' for every position a slot shows right now."""
    positions: dict[int, str] = {}
    with stack.pg_engine().connect() as conn:
        rows = conn.execute(
            text(
                "SELECT slot_name, confirmed_flush_lsn::text, restart_lsn::text "
                "FROM pg_replication_slots"
            )
        )
        for slot, confirmed, restart in rows:
            for lsn, column in ((confirmed, "confirmed_flush_lsn"), (restart, "restart_lsn")):
                if lsn:
                    positions.setdefault(str_to_lsn(lsn), f"replication slot {slot!r} ({column})")
    return positions


def _current_wal_lsn(stack: Any) -> int:
    with stack.pg_engine().connect() as conn:
        return str_to_lsn(conn.execute(text("SELECT pg_current_wal_lsn()::text")).scalar_one())


@self_check
def check_event_lsn(stack: Any, customer_name: str, event_lsn: Any) -> None:
    """`event_lsn` must be the LSN of the insert event of `customer_name` on the topic."""
    require_answer(event_lsn, "event_lsn", FIND_HINTS)
    answer = as_lsn_int(event_lsn, "event_lsn")
    found = _wait_for_inserts(stack, [customer_name], 1)
    if found.empty:
        raise CheckFailed(
            f"the topic holds no insert event of customer {customer_name!r}",
            (
                "Is capture running? `python -m cdc_kit status` says.",
                "Then re-run the cell that adds the customers, and this exercise.",
            ),
        )
    event = found.iloc[-1]
    expected = str_to_lsn(event["lsn"])
    if answer == expected:
        passed(f"{customer_name}'s insert is on the topic at LSN {both_forms(expected)}")
        return
    if isinstance(event_lsn, Integral) and int(event_lsn) == int(event["offset"]):
        raise CheckFailed(
            f"`event_lsn` is {event_lsn}, the event's offset: its place on the topic, counted "
            "by Kafka. The LSN is the change's position in PostgreSQL's log",
            (
                "Which column of the events DataFrame comes from the event's metadata, "
                "written by PostgreSQL?",
                "the `lsn` column, not `offset`",
            ),
        )
    slot = _slot_positions(stack).get(answer)
    if slot is not None:
        raise CheckFailed(
            f"{lsn_to_str(answer)} is the position of {slot}: how far a reader of the log has "
            "confirmed, not the LSN of your customer's event",
            ("Where does an event carry its own LSN?", "in its metadata: the `lsn` column of "
             "recent_events(...)"),
        )  # fmt: skip
    everything = topic_events(stack, table=None)
    same = everything[everything["lsn"] == lsn_to_str(answer)]
    if not same.empty:
        other = same.iloc[-1]
        who = _name_of(other["payload"]) or f"id {(other['payload'] or {}).get('id')}"
        raise CheckFailed(
            f"{lsn_to_str(answer)} is the LSN of another event: the {other['operation']} of "
            f"{other['table']} {who!r}. Every row has its own event and its own LSN",
            (
                f"Which of the events holds {customer_name!r} in its payload?",
                "keep the rows whose payload name equals new_name: "
                "events['payload'].map(lambda row: row['name']) gives each event's name",
            ),
        )
    if answer > expected and answer <= _current_wal_lsn(stack):
        problem = (
            f"no event has the LSN {lsn_to_str(answer)}; it lies after your event in the log: "
            "a position read from PostgreSQL (pg_current_wal_lsn()), not the event's own LSN"
        )
    elif answer < expected:
        problem = (
            f"no event has the LSN {lsn_to_str(answer)}; it lies before your event in the log: "
            "a position read before your INSERT (a slot's position in step 2?), not the "
            "event's own LSN"
        )
    else:
        problem = (
            f"no event has the LSN {lsn_to_str(answer)}, and PostgreSQL's log has not reached "
            "it yet: it is not a position of this lab"
        )
    raise CheckFailed(problem, ("Where does an event carry its own LSN?", FIND_HINTS[1]))


def solution() -> None:
    """Show a worked solution of this lesson's build exercise."""
    show_solution(__name__)
