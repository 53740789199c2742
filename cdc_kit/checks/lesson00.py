"""Self-check of lesson 00: find the event of a freshly added customer on the change topic."""

from __future__ import annotations

from typing import Any

from cdc_kit.checks.common import (
    CheckFailed,
    as_lsn_int,
    both_forms,
    passed,
    require_answer,
    self_check,
    show_solution,
    topic_events,
    wait_for,
)
from cdc_kit.lsn import lsn_to_str, str_to_lsn
from cdc_kit.peek import recent_events


def _insert_event(stack: Any, customer_name: str) -> dict | None:
    events = topic_events(stack, "customer")
    named = events["payload"].map(lambda row: isinstance(row, dict) and row.get("name"))
    mine = events[(events["operation"] == "insert") & (named == customer_name)]
    return None if mine.empty else mine.iloc[-1].to_dict()


@self_check
def check_event_lsn(stack: Any, customer_name: str, event_lsn: Any) -> None:
    """`event_lsn` must be the LSN of the insert event of `customer_name` on the topic."""
    require_answer(
        event_lsn,
        "event_lsn",
        "recent_events(stack, limit=5, table='customer') shows the newest customer events; "
        "pick the row whose payload has your name and copy its `lsn`",
    )
    answer = as_lsn_int(event_lsn, "event_lsn")
    event = wait_for(lambda: _insert_event(stack, customer_name), timeout=10)
    if event is None:
        raise CheckFailed(
            f"the topic holds no insert event of customer {customer_name!r}",
            "is capture running (python -m cdc_kit status)? Then re-run the cell that adds "
            "the customer, and this exercise",
        )
    expected = str_to_lsn(event["lsn"])
    if answer == expected:
        passed(f"{customer_name}'s insert is on the topic at LSN {both_forms(expected)}")
        return
    everything = recent_events(stack, limit=1_000_000)
    same = everything[everything["lsn"] == lsn_to_str(answer)]
    if not same.empty:
        other = same.iloc[-1]
        payload = other["payload"] if isinstance(other["payload"], dict) else {}
        who = payload.get("name") or f"id {payload.get('id')}"
        raise CheckFailed(
            f"{lsn_to_str(answer)} is the LSN of another event: the {other['operation']} "
            f"of {other['table']} {who!r}",
            f"keep only the events whose payload name is {customer_name!r} "
            "(events['payload'].map(lambda row: row['name'] == new_name))",
        )
    raise CheckFailed(
        f"no event on the topic has the LSN {lsn_to_str(answer)}: that looks like a position "
        "read from PostgreSQL (pg_current_wal_lsn() or the slot), not an event's own LSN",
        "take the `lsn` column of your customer's row in recent_events(...)",
    )


def solution() -> None:
    """Show a worked solution of this lesson's build exercise."""
    show_solution(__name__)
