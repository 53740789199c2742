"""Self-check of lesson 03: the lesson's text slot was moved (consumed), not only peeked."""

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
)
from cdc_kit.lsn import lsn_to_str, str_to_lsn
from cdc_kit.replication import confirmed_lsn

MOVE_HINT = (
    "SELECT pg_replication_slot_advance(%s, %s::pg_lsn) with (TEXT_SLOT, target_lsn), or "
    "read the changes with pg_logical_slot_get_changes(%s, NULL, NULL)"
)
READ_HINT = "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s"


@self_check
def check_slot_released(stack: Any, slot: str, target_lsn: str, text_slot_position: Any) -> None:
    """The slot exists, its confirmed position is at or past `target_lsn` (chosen this run),
    and `text_slot_position` is that position, read back from PostgreSQL."""
    require_answer(
        text_slot_position,
        "text_slot_position",
        f"{MOVE_HINT}; then read it back: {READ_HINT}",
    )
    answer = as_lsn_int(text_slot_position, "text_slot_position")
    target = str_to_lsn(target_lsn)
    conn = stack.pg_connection()
    try:
        position = confirmed_lsn(conn, slot)
    finally:
        conn.close()
    if position is None:
        raise CheckFailed(
            f"the slot {slot} does not exist any more: dropping releases its WAL too, but its "
            "consumer would lose its place",
            "re-run the notebook from step 3 (it makes the slot again) and move the slot instead",
        )
    if position < target:
        peeked = "; peeking reads without moving the slot" if answer >= target else ""
        raise CheckFailed(
            f"{slot} is still at {lsn_to_str(position)}, before target_lsn {target_lsn}{peeked}",
            MOVE_HINT,
        )
    if answer != position:
        raise CheckFailed(
            f"`text_slot_position` is {lsn_to_str(answer)}, but {slot} is at "
            f"{lsn_to_str(position)}",
            f"read it back after moving the slot: {READ_HINT}",
        )
    passed(
        f"{slot} moved to {both_forms(position)}, past {target_lsn}: PostgreSQL may recycle "
        "the WAL before it at its next snapshot point"
    )


def solution() -> None:
    """Show a worked solution of this lesson's build exercise."""
    show_solution(__name__)
