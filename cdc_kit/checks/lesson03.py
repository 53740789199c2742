"""Lesson 03's exercises: what an UPDATE carries under the table's REPLICA IDENTITY (a
prediction), and the lesson's text slot moved past a target (consumed, not only peeked)."""

from __future__ import annotations

from typing import Any

from cdc_kit import replication
from cdc_kit.checks.common import (
    CheckFailed,
    as_lsn_int,
    as_word,
    both_forms,
    is_placeholder,
    judge_prediction,
    passed,
    self_check,
    show_solution,
)
from cdc_kit.lsn import lsn_to_str, str_to_lsn

#: pgoutput's old-tuple flag of an Update -> the word the prediction uses.
OLD_TUPLE = {None: "none", "K": "key", "O": "row"}


def update_old_tuple(conn: Any, slot: str, publication: str, row_id: int) -> str:
    """What the newest pgoutput Update of `row_id` carried about the old row: 'none' (no old
    tuple), 'key' (K: the old key) or 'row' (O: the whole old row). Peeks; consumes nothing."""
    from cdc_kit.pgoutput import Decoder, Update

    decoder = Decoder()
    found = None
    for _, data in replication.peek_binary_changes(conn, slot, publication):
        message = decoder.feed(data)
        if isinstance(message, Update) and int(decoder.row(message.relid, message.new)["id"]) == (
            row_id
        ):
            found = message
    if found is None:
        raise LookupError(f"slot {slot} holds no UPDATE of row {row_id}")
    return OLD_TUPLE[found.old_kind]


def reveal_update_old(
    prediction: Any, conn: Any, slot: str, publication: str, product_id: int
) -> None:
    """Feedback on the prediction: what did pgoutput's Update of a non-key column carry?"""
    identity = replication.replica_identity(conn, "product")
    try:
        actual = update_old_tuple(conn, slot, publication, product_id)
    except LookupError:  # a reveal never fails: it says what to do
        print(f"· {slot} holds no UPDATE of product {product_id} any more (was it consumed?): "
              "run the cell again, it makes a fresh one")
        return
    why = {
        "none": (
            f"product's REPLICA IDENTITY is {identity}: an UPDATE carries no old values at all "
            "unless a column of the key itself changed (then the old key, K). The new row says "
            "which row it is: its key did not change."
        ),
        "key": "the key changed in this UPDATE, so pgoutput sent the old key (K) to find the row.",
        "row": (
            f"product's REPLICA IDENTITY is {identity}: every UPDATE and DELETE carries the "
            "whole old row (O)."
        ),
    }[actual]
    judge_prediction(
        prediction,
        actual,
        name="predicted_update_old",
        why=why,
        normalise=as_word,
        wrong={
            "key": (
                "A DELETE carries the old key (K) under DEFAULT; an UPDATE needs it only when "
                "the key changed, since the new row already names the row."
            ),
            "row": "The whole old row (O) comes only with REPLICA IDENTITY FULL.",
        },
    )


# ---- the build exercise: release the text slot -------------------------------------------------
MOVE_HINTS = (
    "Which of the functions named above the exercise move a slot, and which only read it?",
    "A peek leaves the slot where it was: use one of the two functions the exercise names "
    "that move a slot, with TEXT_SLOT and target_lsn",
)
READ_HINTS = (
    "Did you read the slot's position after moving it, and from the same slot?",
    "Step 3 shows the columns of pg_replication_slots; read the one that says how far the "
    "consumer confirmed, in the row of TEXT_SLOT",
)


def _positions(conn: Any) -> dict[str, tuple[int | None, int | None]]:
    """slot -> (confirmed_flush_lsn, restart_lsn) as integers, for every logical slot."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT slot_name, confirmed_flush_lsn - '0/0'::pg_lsn, restart_lsn - '0/0'::pg_lsn "
            "FROM pg_replication_slots WHERE slot_type = 'logical'"
        )
        return {
            name: (None if c is None else int(c), None if r is None else int(r))
            for name, c, r in cur.fetchall()
        }


@self_check
def check_slot_released(stack: Any, slot: str, target_lsn: str, text_slot_position: Any) -> None:
    """The slot exists, its confirmed position is at or past `target_lsn` (chosen this run),
    and `text_slot_position` is that position, read back from PostgreSQL."""
    if is_placeholder(text_slot_position):
        raise CheckFailed(
            f"`text_slot_position` still holds the placeholder ({text_slot_position!r})",
            MOVE_HINTS,
        )
    answer = as_lsn_int(text_slot_position, "text_slot_position")
    target = str_to_lsn(target_lsn)
    conn = stack.pg_connection()
    try:
        positions = _positions(conn)
    finally:
        conn.close()
    if slot not in positions:
        raise CheckFailed(
            f"the slot {slot} does not exist any more: dropping releases its WAL too, but its "
            "consumer would lose its place",
            (
                "How would a consumer that keeps its slot let go of old WAL?",
                "re-run the notebook from step 3 (it makes the slot again), then move the slot",
            ),
        )
    position, restart = positions[slot]
    assert position is not None  # a logical slot in use has a confirmed position
    others = {name: pos for name, (pos, _) in positions.items() if name != slot}
    if position < target:
        moved = [name for name, pos in others.items() if pos is not None and pos == target]
        read = [name for name, pos in others.items() if pos is not None and pos == answer]
        if moved or read:
            raise CheckFailed(
                f"{slot} is still at {lsn_to_str(position)}, before target_lsn {target_lsn}, "
                f"but slot {(moved or read)[0]} is at {lsn_to_str(answer if read else target)}: "
                "you moved (or read) another slot",
                (
                    "Which slot does the exercise ask you to move?",
                    "TEXT_SLOT holds its name: pass TEXT_SLOT to the function that moves a "
                    "slot, and read the row of pg_replication_slots for TEXT_SLOT",
                ),
            )
        peeked = "; peeking reads without moving the slot" if answer >= target else ""
        raise CheckFailed(
            f"{slot} is still at {lsn_to_str(position)}, before target_lsn {target_lsn}{peeked}",
            MOVE_HINTS,
        )
    if answer != position:
        if answer == restart:
            raise CheckFailed(
                f"`text_slot_position` is {lsn_to_str(answer)}, the slot's restart_lsn (the "
                f"oldest WAL it may still need), but it has confirmed up to {lsn_to_str(position)}",
                (
                    "Which of the slot's two positions says how far its consumer confirmed?",
                    "Step 3 names both columns of pg_replication_slots and what each means",
                ),
            )
        raise CheckFailed(
            f"`text_slot_position` is {lsn_to_str(answer)}, but {slot} is at "
            f"{lsn_to_str(position)}",
            READ_HINTS,
        )
    freed = (
        f"WAL before its restart_lsn {lsn_to_str(restart)} may be recycled now"
        if restart is not None
        else "it has no restart_lsn: PostgreSQL invalidated it"
    )
    passed(
        f"{slot} is at {both_forms(position)}, at or past target_lsn {target_lsn}, and keeps "
        f"its place; {freed}"
    )


def solution() -> None:
    """Show a worked solution of this lesson's build exercise."""
    show_solution(__name__)
