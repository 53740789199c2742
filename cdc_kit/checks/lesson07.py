"""Lesson 07: how many versions three updates leave (prediction), and a query without FINAL that
returns each existing SKU's newest units (build), judged while the table holds old versions,
delete markers, and a SKU deleted and listed again under the same id, with merges stopped."""

from __future__ import annotations

import re
from typing import Any

from clickhouse_connect.driver.exceptions import DatabaseError
from sqlalchemy import text

from cdc_kit.checks.common import (
    CheckFailed,
    judge_prediction,
    passed,
    require_answer,
    self_check,
    show_solution,
)
from cdc_kit.errors import first_line

TABLE = "lesson07_stock"

START_HINTS = (
    "Step 2 read the newest units of one SKU without FINAL: which function did it use?",
    "Do that for every SKU at once (GROUP BY id), then ask which SKUs still exist",
    "Whether a SKU exists is decided by its newest row: step 5 shows what that row is for a "
    "deleted SKU",
)
EXISTS_HINTS = (
    "Which row of a SKU says whether it exists now: any of its rows, or the newest?",
    "HAVING filters whole groups; argMax gives any column of a group's newest row, is_deleted too",
)
NEWEST_HINTS = (
    "Is the largest value of a column the newest one?",
    "step 2's argMax: a column's value in the row with the highest lsn",
)
START_AGAIN = ("run the cell before the exercise again: it stops merges and writes a new day",)


# ---- prediction: versions of SKU 1 --------------------------------------------------------------
def _pair(value: Any) -> Any:
    """(rows without FINAL, rows with FINAL) as two ints; anything else as its text."""
    try:
        plain, final = value
        return (int(plain), int(final))
    except (TypeError, ValueError):
        return repr(value)


def reveal_versions(prediction: Any, plain: int, final: int) -> None:
    """What three updates in three batches left of SKU 1, with merges stopped."""
    judge_prediction(
        prediction,
        (plain, final),
        name="predicted_rows",
        normalise=_pair,
        why=(
            f"Each routed batch is one INSERT, and each INSERT writes a part of its own: SKU 1 "
            f"has {plain} rows, its first version (from the first load) and one per update. "
            "Merges are stopped, so nothing collapses them; FINAL merges at read time and shows "
            f"{final}, the row with the highest lsn."
        ),
        wrong={
            (plain - 1, final): "The first version counts too: the row the first load wrote is "
            "still there, in the part of that INSERT.",
            (1, 1): "An update does not change a row in place: ClickHouse's parts never change, "
            "so each update arrives as a new row in a new part.",
            (plain, plain): "FINAL shows one row per ORDER BY key: it merges the versions at "
            "read time, as a merge would.",
            (final, plain): "The other way round: without FINAL you see every stored version.",
        },
    )


# ---- build: the newest units, without FINAL -----------------------------------------------------
def _rows_of(ch: Any, sku: int) -> list[tuple[int, int]]:
    """(is_deleted, lsn) of every stored row of SKU `sku`, oldest first."""
    return ch.query(
        f"SELECT is_deleted, lsn FROM {TABLE} WHERE id = {{id:UInt64}} ORDER BY lsn",  # noqa: S608
        parameters={"id": int(sku)},
    ).result_rows


def _relisted_rows_kept(rows: list[tuple[int, int]]) -> bool:
    """A live row, then a delete marker, then a newer live row: nothing merged them."""
    flags = [flag for flag, _ in rows]
    if not flags or flags[-1] != 0 or 1 not in flags:
        return False
    marker = len(flags) - 1 - flags[::-1].index(1)
    return 0 in flags[:marker]


def _require_the_day(ch: Any, source: dict[int, int], relisted: int, discontinued: list) -> None:
    """The table still holds what tells a right query from a wrong one; else start again."""
    if relisted not in source or any(id in source for id in discontinued):
        raise CheckFailed(
            f"PostgreSQL no longer has the day of the cell before the exercise (SKU {relisted} "
            f"listed again, {list(discontinued)} discontinued)",
            START_AGAIN,
        )
    if not _relisted_rows_kept(_rows_of(ch, relisted)):
        raise CheckFailed(
            f"{TABLE} no longer holds SKU {relisted}'s live row, delete marker and newer live "
            "row: the parts were merged, so a wrong query could not be told from a right one",
            START_AGAIN,
        )
    for id in discontinued:
        flags = [flag for flag, _ in _rows_of(ch, id)]
        if flags[-1:] != [1] or 0 not in flags:
            raise CheckFailed(
                f"{TABLE} no longer holds SKU {id}'s live rows and its delete marker: the parts "
                "were merged, so a wrong query could not be told from a right one",
                START_AGAIN,
            )


def _run(ch: Any, sql: str) -> dict[int, list[int]]:
    """id -> every units value the learner's query returned for it."""
    try:
        result = ch.query_df(sql)
    except DatabaseError as exc:
        message = first_line(exc).split("DB::Exception: ")[-1]
        raise CheckFailed(
            f"ClickHouse refused newest_sql: {message}",
            (
                "What does ClickHouse's message point at: a name, a keyword, a bracket?",
                "run the query in a cell of its own, ch.query_df(newest_sql), and fix it there",
            ),
        ) from None
    # An empty result has no columns at all: over HTTP, ClickHouse sends no Native block for
    # zero rows, so clickhouse-connect cannot name them. The SKUs it lacks are reported later.
    if result.empty:
        return {}
    missing = [column for column in ("id", "units") if column not in result.columns]
    if missing:
        raise CheckFailed(
            f"the result has the columns {list(result.columns)}, not {missing}",
            (
                "Which names does ClickHouse give a computed column?",
                "name a computed column with AS",
            ),
        )
    answer: dict[int, list[int]] = {}
    for key, units in zip(result["id"], result["units"], strict=True):
        answer.setdefault(int(key), []).append(int(units))
    return answer


@self_check
def check_newest_units(stack: Any, newest_sql: Any, relisted_id: int, discontinued: list) -> None:
    """`newest_sql` (no FINAL) returns exactly the SKUs PostgreSQL has, each with the units of its
    newest version, while ClickHouse holds versions, the delete markers of `discontinued`, and
    a live row, a delete marker and a newer live row of `relisted_id`, with merges stopped."""
    require_answer(newest_sql, "newest_sql", START_HINTS)
    if not isinstance(newest_sql, str):
        raise CheckFailed(
            f"newest_sql is a {type(newest_sql).__name__}, not the text of a query",
            'write the query as text: newest_sql = """SELECT ..."""',
        )
    if re.search(r"\bFINAL\b", newest_sql, re.IGNORECASE):
        raise CheckFailed(
            "newest_sql uses FINAL: this exercise is the way without it (for views, "
            "aggregates and tools that cannot say FINAL)",
            START_HINTS,
        )
    ch = stack.clickhouse()
    with stack.pg_engine().connect() as db:
        source = dict(db.execute(text(f"SELECT id, units FROM {TABLE}")).all())  # noqa: S608
    _require_the_day(ch, source, relisted_id, discontinued)
    final = dict(ch.query(f"SELECT id, units FROM {TABLE} FINAL").result_rows)  # noqa: S608
    if final != source:
        raise CheckFailed(
            "ClickHouse (FINAL) does not match PostgreSQL yet",
            "route the newest changes: router.catch_up(), then run this check again",
        )
    answer = _run(ch, newest_sql)
    repeated = {key: values for key, values in answer.items() if len(values) > 1}
    if repeated:
        rows = sum(len(values) for values in answer.values())
        raise CheckFailed(
            f"{rows} rows for {len(answer)} SKUs: the query returns every stored version "
            f"(SKU {next(iter(repeated))}: units {next(iter(repeated.values()))})",
            ("How many rows should one SKU have in the answer?", *START_HINTS[1:]),
        )
    ghosts = sorted(set(answer) - set(source))
    if ghosts and all(answer[key] == [0] for key in ghosts):
        raise CheckFailed(
            f"SKU id(s) {ghosts} were deleted in PostgreSQL, but the query returns them with "
            "units 0: the newest row of each is its delete marker, whose units is a type "
            "default, not a stock level",
            EXISTS_HINTS,
        )
    if ghosts:
        raise CheckFailed(
            f"SKU id(s) {ghosts} were deleted in PostgreSQL, but the query returns them with "
            "their last live units: a WHERE is_deleted = 0 throws the delete markers away "
            "before grouping, so a deleted SKU's last live version comes back",
            (
                "Does WHERE filter rows before or after GROUP BY?",
                "keep every row in the groups, and decide per group, from its newest row",
            ),
        )
    if not answer:
        raise CheckFailed(
            f"the query returns no rows; {len(source)} SKUs exist",
            (
                "Which part of the query keeps no group at all: a WHERE, or a HAVING?",
                *EXISTS_HINTS[1:],
            ),
        )
    absent = sorted(set(source) - set(answer))
    if relisted_id in absent:
        raise CheckFailed(
            f"SKU {relisted_id} was deleted and listed again under the same id: ClickHouse "
            "holds a live row, its delete marker and a newer live row, and the newest is "
            "live, yet the query leaves it out. A test on every row of a group, like "
            "HAVING max(is_deleted) = 0, drops every SKU that was ever deleted",
            EXISTS_HINTS,
        )
    if absent:
        raise CheckFailed(
            f"SKU id(s) {absent} exist but are missing from the result",
            ("Does the query look at every row of the table?", *EXISTS_HINTS),
        )
    wrong = {key: values[0] for key, values in answer.items() if values[0] != source[key]}
    if wrong:
        key = next(iter(wrong))
        largest = dict(
            ch.query(f"SELECT id, max(units) FROM {TABLE} GROUP BY id").result_rows  # noqa: S608
        )
        if all(wrong[k] == largest.get(k) for k in wrong):
            raise CheckFailed(
                f"SKU {key}: {wrong[key]} is its largest units value, not its newest "
                f"({source[key]})",
                NEWEST_HINTS,
            )
        raise CheckFailed(
            f"SKU {key}: the query says {wrong[key]} units, the newest version has {source[key]}",
            NEWEST_HINTS,
        )
    stored, markers = ch.query(
        f"SELECT count(), countIf(is_deleted = 1) FROM {TABLE}"  # noqa: S608 - a constant
    ).result_rows[0]
    passed(
        f"newest_sql returns the {len(answer)} SKUs that exist, each with its newest units, as "
        f"FINAL does, from {stored} stored rows ({markers} of them delete markers), SKU "
        f"{relisted_id} (listed again) included"
    )


def solution() -> None:
    """Show a worked solution of this lesson's build exercise."""
    show_solution(__name__)
