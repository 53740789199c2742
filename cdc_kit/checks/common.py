"""What every self-check shares: the failure a learner sees, the success line, small probes."""

from __future__ import annotations

import functools
import time
from collections import Counter
from collections.abc import Callable, Sequence
from numbers import Integral
from typing import Any, TypeVar

import pandas as pd

from cdc_kit.errors import CdcKitError
from cdc_kit.lsn import lsn_to_str, str_to_lsn
from cdc_kit.peek import recent_events

T = TypeVar("T")


class CheckFailed(CdcKitError):
    """An exercise is not solved yet: `problem` says what is wrong, the hints what to try.

    `hint` is one line, or several that escalate: a question first, then a pointer. Each time
    the same failure comes back (see `self_check`), the next one is shown; after the last, a
    line names `lessonNN.solution()`. No hint spells out the answer.
    """

    def __init__(self, problem: str, hint: str | Sequence[str] = "") -> None:
        super().__init__(problem)
        self.problem = problem
        self.hints: tuple[str, ...] = (hint,) if isinstance(hint, str) else tuple(hint)
        self.level = 0  # which hint this attempt shows (set by `self_check`)
        self.solution_call = ""  # e.g. "lesson05.solution()", once the hints are used up

    @property
    def hint(self) -> str:
        """The hint this attempt shows."""
        if not self.hints:
            return ""
        return self.hints[min(self.level, len(self.hints) - 1)]

    @property
    def stuck(self) -> str:
        """The last resort, shown once every hint was seen: where the worked solution is."""
        if self.solution_call and self.level >= len(self.hints):
            return f"Still stuck? {self.solution_call} shows a worked solution."
        return ""

    def __str__(self) -> str:
        lines = [self.problem]
        if self.hint:
            lines.append(f"Try: {self.hint}")
        if self.stuck:
            lines.append(self.stuck)
        return "\n".join(lines)

    def _render_traceback_(self) -> list[str]:
        """IPython shows these lines instead of a traceback: the learner needs no stack."""
        lines = [f"✗ Not yet: {self.problem}"]
        if self.hint:
            lines.append(f"  Try: {self.hint}")
        if self.stuck:
            lines.append(f"  {self.stuck}")
        return lines


#: (check, hints) -> how often that failure was shown in this kernel.
_ATTEMPTS: Counter[tuple[str, tuple[str, ...]]] = Counter()

F = TypeVar("F", bound=Callable[..., Any])


def self_check(check: F) -> F:
    """Make `check` a lesson's self-check: a failure that comes back shows the next hint.

    The lesson is the check's module (`cdc_kit.checks.lesson05` -> `lesson05.solution()`).
    """
    lesson = check.__module__.rsplit(".", 1)[-1]

    @functools.wraps(check)
    def checked(*args: Any, **kwargs: Any) -> Any:
        try:
            return check(*args, **kwargs)
        except CheckFailed as failure:
            key = (check.__qualname__, failure.hints)
            failure.level = _ATTEMPTS[key]
            failure.solution_call = f"{lesson}.solution()"
            _ATTEMPTS[key] += 1
            raise

    return checked  # type: ignore[return-value]


def forget_attempts() -> None:
    """Start every hint from the first again (tests; a learner's kernel restart does it too)."""
    _ATTEMPTS.clear()


def passed(message: str) -> None:
    """The success line of a self-check."""
    print(f"✓ {message}")


def judge_prediction(
    prediction: Any,
    actual: Any,
    *,
    name: str,
    why: str,
    wrong: dict[Any, str] | None = None,
    normalise: Callable[[Any], Any] = lambda value: value,
) -> bool:
    """Feedback on a predict-then-observe exercise: never an error, always what happened and why.

    `prediction` is what the learner wrote into the variable `name` before looking; `actual`
    what the lab shows. `why` explains the answer; `wrong` maps typical wrong predictions to
    what the learner probably thought. Returns True for a right prediction.
    """
    if is_placeholder(prediction):
        print(
            f"· `{name}` holds no prediction yet. Commit to one in the cell above before you "
            f"read on; it pays off. The answer: {actual!r}. {why}"
        )
        return False
    if normalise(prediction) == normalise(actual):
        print(f"✓ You predicted {prediction!r}: right. {why}")
        return True
    print(f"✗ You predicted {prediction!r}; it is {actual!r}.")
    thought = (wrong or {}).get(normalise(prediction))
    if thought:
        print(f"  {thought}")
    print(f"  {why}")
    return False


# ---- how a prediction is compared: written as a learner writes it -----------------------------
def as_number(value: Any) -> Any:
    """3, '3' and 3.0 are the same prediction."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return value


def as_yes_no(value: Any) -> Any:
    """True/False, also written 'true'/'false' or 'yes'/'no'."""
    if isinstance(value, str):
        words = {"yes": True, "no": False, "true": True, "false": False}
        return words.get(value.strip().lower(), value)
    return value


def as_word(value: Any) -> Any:
    """'Key ' and 'key' are the same answer."""
    return value.strip().lower() if isinstance(value, str) else value


def show_solution(lesson: str, cell_id: str | None = None) -> None:
    """Show the worked solution of a lesson's build exercise(s) (or of one exercise cell).

    Predictions (`exercise-predict-...`) are left out: their answer is in the lesson itself.
    """
    from cdc_kit.solutions import SOLUTIONS, read_solutions

    number = lesson.rsplit(".", 1)[-1].removeprefix("lesson")  # a module name does too
    files = sorted(SOLUTIONS.glob(f"{number}_*.py"))
    blocks = read_solutions(files[0]) if files else {}
    if cell_id:
        chosen = {cell: code for cell, code in blocks.items() if cell == cell_id}
    else:
        chosen = {
            cell: code
            for cell, code in blocks.items()
            if not cell.startswith("exercise-predict-")
        }
    if not chosen:
        print(f"no worked solution for {cell_id or lesson} is packaged with this kit")
        return
    text = "\n\n".join(f"# {cell}\n{code.rstrip()}" for cell, code in chosen.items())
    try:
        from IPython import get_ipython
        from IPython.display import Markdown, display
    except ImportError:
        get_ipython = None
    if get_ipython is None or get_ipython() is None:  # outside Jupyter: plain text
        print(text)
        return
    display(Markdown(f"One worked solution:\n\n```python\n{text}\n```"))


def is_placeholder(value: Any) -> bool:
    """True for what an unsolved exercise cell leaves behind: `...` or None."""
    return value is None or value is Ellipsis


def require_answer(value: Any, name: str, hint: str | Sequence[str]) -> None:
    """Fail with the exercise's hint while `name` still holds the placeholder."""
    if is_placeholder(value):
        raise CheckFailed(f"`{name}` still holds the placeholder ({value!r})", hint)


def as_lsn_int(value: Any, name: str) -> int:
    """An LSN given as PostgreSQL text ('0/1B18E40') or as ClickHouse's integer -> the integer."""
    if isinstance(value, bool):
        raise CheckFailed(f"`{name}` is {value!r}, not an LSN", "an LSN looks like '0/1B18E40'")
    if isinstance(value, Integral):  # numpy's integers too, as query_df returns them
        return int(value)
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


def topic_events(stack: Any, table: str | None) -> pd.DataFrame:
    """Every event of `table` (None: of every table) on the change topic, oldest first (the
    topic is the real state)."""
    return recent_events(stack, limit=1_000_000, table=table)

