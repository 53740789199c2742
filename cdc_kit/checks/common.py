"""What every self-check shares: the failure a learner sees, the success line, small probes."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import pandas as pd

from cdc_kit.lsn import lsn_to_str, str_to_lsn
from cdc_kit.peek import recent_events

T = TypeVar("T")


class CheckFailed(Exception):
    """An exercise is not solved yet: `problem` says what is wrong, `hint` what to try."""

    def __init__(self, problem: str, hint: str = "") -> None:
        super().__init__(problem if not hint else f"{problem}\nTry: {hint}")
        self.problem = problem
        self.hint = hint

    def _render_traceback_(self) -> list[str]:
        """IPython shows these lines instead of a traceback: the learner needs no stack."""
        lines = [f"✗ Not yet: {self.problem}"]
        if self.hint:
            lines.append(f"  Try: {self.hint}")
        return lines


def passed(message: str) -> None:
    """The success line of a self-check."""
    print(f"✓ {message}")


def is_placeholder(value: Any) -> bool:
    """True for what an unsolved exercise cell leaves behind: `...` or None."""
    return value is None or value is Ellipsis


def require_answer(value: Any, name: str, hint: str) -> None:
    """Fail with the exercise's hint while `name` still holds the placeholder."""
    if is_placeholder(value):
        raise CheckFailed(f"`{name}` still holds the placeholder ({value!r})", hint)


def as_lsn_int(value: Any, name: str) -> int:
    """An LSN given as PostgreSQL text ('0/1B18E40') or as ClickHouse's integer -> the integer."""
    if isinstance(value, bool):
        raise CheckFailed(f"`{name}` is {value!r}, not an LSN", "an LSN looks like '0/1B18E40'")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return str_to_lsn(value.strip())
        except ValueError:
            pass
    raise CheckFailed(
        f"`{name}` is {value!r} ({type(value).__name__}), not an LSN",
        "store the LSN as text like '0/1B18E40' or as the integer ClickHouse stores",
    )


def both_forms(lsn: int) -> str:
    """'0/1B18E40 (= 28413504)': the LSN as PostgreSQL writes it and as ClickHouse stores it."""
    return f"{lsn_to_str(lsn)} (= {lsn} as the integer ClickHouse stores)"


def wait_for(probe: Callable[[], T | None], timeout: float = 10.0, every: float = 0.1) -> T | None:
    """Call `probe` until it returns something other than None, or give up after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found is not None or time.monotonic() >= deadline:
            return found
        time.sleep(every)


def table_order(ch: Any, database: str, table: str) -> tuple[str, str] | None:
    """(engine, sorting key as ClickHouse shows it) of a table; None if there is no such table."""
    rows = ch.query(
        "SELECT engine_full, sorting_key FROM system.tables "
        "WHERE database = {d:String} AND name = {t:String}",
        parameters={"d": database, "t": table},
    ).result_rows
    return (rows[0][0], rows[0][1]) if rows else None


def ordered_by(sorting_key: str, key: str) -> bool:
    """True if a sorting key from `table_order` is the one column `key`: ClickHouse shows
    ORDER BY (id) as '(id)', and a name that needs quoting in backticks."""
    return sorting_key.strip("()` ") == key


def parked_letters(router: Any, table: str, ids: Any) -> list[tuple[str, str, str]]:
    """(key, stage, reason) of the router's dead letters for rows `ids` of `table`: events it
    parked and did not replay, in topic order (a letter's key is "table:id")."""
    keys = {f"{table}:{id}" for id in ids}
    return [
        (letter["key"], letter["stage"], letter["error"])
        for letter in router.dead_letters()
        if letter["key"] in keys
    ]


def topic_events(stack: Any, table: str) -> pd.DataFrame:
    """Every event of `table` on the change topic, oldest first (the topic is the real state)."""
    return recent_events(stack, limit=1_000_000, table=table)

