"""Self-check of lesson 07: a query without FINAL that returns each existing SKU's newest units,
run against the lesson's table while it still holds old versions and tombstones."""

from __future__ import annotations

import re
from typing import Any

from clickhouse_connect.driver.exceptions import DatabaseError
from sqlalchemy import text

from cdc_kit.checks.common import CheckFailed, passed, require_answer, self_check, show_solution
from cdc_kit.errors import first_line

TABLE = "lesson07_stock"
ARGMAX_HINT = (
    "SELECT id, argMax(units, lsn) AS units FROM lesson07_stock GROUP BY id "
    "HAVING ... (what tells you the newest row of a key is a tombstone?)"
)
HAVING_HINT = "keep only keys whose newest row is alive: HAVING argMax(is_deleted, lsn) = 0"


def _stored(ch: Any) -> tuple[int, int, dict[int, int]]:
    """(rows stored, tombstones stored, id -> units of the rows visible with FINAL)."""
    stored, tombstones = ch.query(
        f"SELECT count(), countIf(is_deleted = 1) FROM {TABLE}"  # noqa: S608 - a constant
    ).result_rows[0]
    final = dict(ch.query(f"SELECT id, units FROM {TABLE} FINAL").result_rows)  # noqa: S608
    return stored, tombstones, final


def _run(ch: Any, sql: str) -> dict[int, list[int]]:
    """id -> every units value the learner's query returned for it."""
    try:
        result = ch.query_df(sql)
    except DatabaseError as exc:
        message = first_line(exc).split("DB::Exception: ")[-1]
        raise CheckFailed(f"ClickHouse refused newest_sql: {message}", ARGMAX_HINT) from None
    # An empty result has no columns at all: over HTTP, ClickHouse sends no Native block for
    # zero rows, so clickhouse-connect cannot name them. The SKUs it lacks are reported later.
    if result.empty:
        return {}
    missing = [column for column in ("id", "units") if column not in result.columns]
    if missing:
        raise CheckFailed(
            f"the result has the columns {list(result.columns)}, not {missing}",
            "name them: SELECT id, argMax(units, lsn) AS units ...",
        )
    answer: dict[int, list[int]] = {}
    for key, units in zip(result["id"], result["units"], strict=True):
        answer.setdefault(int(key), []).append(int(units))
    return answer


@self_check
def check_newest_units(stack: Any, newest_sql: Any) -> None:
    """`newest_sql` (no FINAL) returns exactly the SKUs PostgreSQL still has, each with the units
    of its newest version, while the table holds versions and tombstones that a wrong query
    would show."""
    require_answer(newest_sql, "newest_sql", ARGMAX_HINT)
    if not isinstance(newest_sql, str):
        raise CheckFailed(
            f"newest_sql is a {type(newest_sql).__name__}, not the text of a query",
            'newest_sql = "SELECT id, argMax(units, lsn) AS units FROM lesson07_stock ..."',
        )
    if re.search(r"\bFINAL\b", newest_sql, re.IGNORECASE):
        raise CheckFailed(
            "newest_sql uses FINAL: this exercise is the way without it", ARGMAX_HINT
        )
    ch = stack.clickhouse()
    stored, tombstones, final = _stored(ch)
    if stored == len(final) or not tombstones:
        raise CheckFailed(
            f"{TABLE} holds {stored} rows and {tombstones} tombstones: merged, so a wrong query "
            "could not be told from a right one",
            "run the cell before the exercise again (new versions, two SKUs discontinued)",
        )
    with stack.pg_engine().connect() as db:
        source = dict(db.execute(text(f"SELECT id, units FROM {TABLE}")).all())  # noqa: S608
    if not source:
        raise CheckFailed(
            f"{TABLE} has no SKUs left in PostgreSQL: an empty answer could not be told from a "
            "right one",
            "run the cell before the exercise again (it brings the catalogue back to ten SKUs)",
        )
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
            "one row per SKU: GROUP BY id, and argMax(units, lsn) AS units",
        )
    ghosts = sorted(set(answer) - set(source))
    if ghosts:
        raise CheckFailed(
            f"SKU id(s) {ghosts} were deleted in PostgreSQL, but the query returns them: the "
            "newest row of each is a tombstone (is_deleted = 1); a WHERE is_deleted = 0 before "
            "grouping only brings their last live version back",
            HAVING_HINT,
        )
    absent = sorted(set(source) - set(answer))
    if absent:
        raise CheckFailed(
            f"SKU id(s) {absent} exist but are missing from the result",
            "group every row of the table by id; filter groups with HAVING, not rows",
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
                "argMax(units, lsn): the units of the row with the highest lsn",
            )
        raise CheckFailed(
            f"SKU {key}: the query says {wrong[key]} units, the newest version has "
            f"{source[key]}",
            "argMax(units, lsn): the units of the row with the highest lsn",
        )
    passed(
        f"newest_sql returns the {len(answer)} SKUs that exist, each with its newest units, as "
        f"FINAL does, from {stored} stored rows ({tombstones} of them tombstones)"
    )


def solution() -> None:
    """Show a worked solution of this lesson's build exercise."""
    show_solution(__name__)
