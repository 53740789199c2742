"""`python -m cdc_kit demo`: the whole pipeline in thirty seconds, in the terminal.

Starts the stack, creates the lesson tables with sample data, routes every change into
ClickHouse, then inserts, updates and deletes one customer and shows each change arrive.
"""

from __future__ import annotations

import argparse
import time
import uuid

from sqlalchemy import text

from cdc_kit import oltp, reconcile
from cdc_kit.router import Router
from cdc_kit.stack import ensure_running


def timed_catch_up(router: Router) -> float:
    """Route until ClickHouse holds everything committed so far; returns the seconds it took."""
    began = time.monotonic()
    router.catch_up()
    return time.monotonic() - began


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cdc_kit demo", description=__doc__)
    parser.parse_args(argv)
    stack = ensure_running()
    engine = stack.pg_engine()
    ch = stack.clickhouse()
    oltp.create_all(engine)
    loaded = oltp.load_sample_data(engine, progress=False)
    print(f"sample data loaded: {loaded}")
    with Router(stack) as router:
        router.catch_up(timeout=60)  # the sample data (and the ClickHouse tables, made first)

        def customer(row_id: int) -> list[tuple]:
            return ch.query(
                "SELECT id, name, city FROM customer FINAL WHERE id = {id:UInt64}",
                parameters={"id": row_id},
            ).result_rows

        with engine.begin() as conn:
            new_id = conn.execute(
                text(
                    "INSERT INTO customer (email, name, country, city) "
                    "VALUES (:email, 'Demo Person', 'NL', 'Utrecht') RETURNING id"
                ),
                {"email": f"demo-{uuid.uuid4().hex[:8]}@example.com"},  # e-mails are unique
            ).scalar_one()
        took = timed_catch_up(router)
        print(f"insert arrived in {took * 1000:.0f} ms: {customer(new_id)}")

        with engine.begin() as conn:
            conn.execute(
                text("UPDATE customer SET city = 'Amsterdam' WHERE id = :id"), {"id": new_id}
            )
        took = timed_catch_up(router)
        print(f"update arrived in {took * 1000:.0f} ms: {customer(new_id)}")

        with engine.begin() as conn:
            conn.execute(text("DELETE FROM customer WHERE id = :id"), {"id": new_id})
        took = timed_catch_up(router)
        versions = ch.query(
            "SELECT lsn, city, is_deleted FROM customer WHERE id = {id:UInt64} ORDER BY lsn",
            parameters={"id": new_id},
        ).result_rows
        print(f"delete arrived in {took * 1000:.0f} ms; versions kept without FINAL: {versions}")
        print(f"with FINAL the row is gone: {customer(new_id)}")

        differences = reconcile.compare(engine, ch)
        stats = router.stats()
    if differences:
        print("PostgreSQL and ClickHouse differ:", *differences.values(), sep="\n  ")
        return 1
    print(
        f"PostgreSQL and ClickHouse FINAL agree; router consumed {stats['consumed']}, "
        f"routed {stats['routed']}, dead-lettered {stats['dead_lettered']}"
    )
    return 0
