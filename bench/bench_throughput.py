"""Throughput of each stage and of the whole path, for a backlog of N row changes.

    PostgreSQL insert rate            (the ceiling: how fast the source produces changes)
    capture: slot -> broker           (decode + JSON + produce, acknowledged by the broker)
    router: broker -> ClickHouse      (consume + parse + validate + batched insert)
    end to end                        (commit in PostgreSQL -> every row in ClickHouse)

Run: `python bench/bench_throughput.py [--rows 100000]`. Prints a table; returns the numbers.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import PeakMemory

from cdc_kit import oltp
from cdc_kit.capture.worker import Capture
from cdc_kit.router import Router
from cdc_kit.stack import Stack, scratch_stack

INSERT_SQL = (
    'INSERT INTO customer (id, email, name, country, city, bio, "createdAt") '
    "SELECT g, 'c' || g || '@example.com', 'Customer ' || g, "
    "(ARRAY['US','DE','JP','BR'])[1 + g %% 4], 'Town', NULL, now() "
    "FROM generate_series(%s, %s) g"
)


def insert_rows(stack: Stack, first: int, count: int, per_txn: int = 10000) -> float:
    """Insert rows in transactions of `per_txn`; returns rows per second."""
    conn = stack.pg_connection()
    began = time.perf_counter()
    with conn.cursor() as cur:
        for start in range(first, first + count, per_txn):
            cur.execute(INSERT_SQL, (start, min(start + per_txn, first + count) - 1))
            conn.commit()
    took = time.perf_counter() - began
    conn.close()
    return count / took


def create_slot(stack: Stack) -> None:
    """Let capture create its slot (empty snapshot) and stop, so later inserts are a backlog."""
    capture = Capture(stack.settings)
    thread = threading.Thread(target=capture.run, daemon=True)
    thread.start()
    conn = stack.pg_connection()
    conn.autocommit = True
    with conn.cursor() as cur:
        for _ in range(200):
            cur.execute(
                "SELECT active FROM pg_replication_slots WHERE slot_name = %s",
                (stack.settings.slot_name,),
            )
            if cur.fetchone() == (True,):
                break
            time.sleep(0.05)
    conn.close()
    capture.stop()
    thread.join(timeout=30)


def run_capture_until(capture: Capture, events: int, progress: tqdm) -> float:
    """Run capture in a thread until `events` are produced and acked; returns seconds."""
    thread = threading.Thread(target=capture.run, daemon=True)
    began = time.perf_counter()
    thread.start()
    while capture.stats.events < events:
        progress.n = capture.stats.events
        progress.refresh()
        time.sleep(0.05)
    took = time.perf_counter() - began
    progress.n = capture.stats.events
    progress.close()
    capture.stop()
    thread.join(timeout=30)
    return took


def route_until(router: Router, events: int) -> float:
    began = time.perf_counter()
    with tqdm(total=events, desc="router", unit="ev") as bar:
        while router.stats()["routed"] < events:
            result = router.step(timeout_ms=200)
            bar.update(result.routed)
    return time.perf_counter() - began


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args(argv)
    rows = args.rows
    # Capture runs in this process here (not as a service), so it can be timed alone.
    with scratch_stack(only=["postgres", "broker", "clickhouse"], confirm_after="broker") as stack:
        engine = stack.pg_engine()
        oltp.create_all(engine)
        create_slot(stack)

        pg_rate = insert_rows(stack, 1, rows)
        capture = Capture(stack.settings)
        capture_s = run_capture_until(capture, rows, tqdm(total=rows, desc="capture", unit="ev"))

        router = Router(stack, batch_size=20000)
        router.connect()  # clients and tables outside the timing
        router_s = route_until(router, rows)

        # End to end as deployed: capture as its own process (the stack's service), the
        # router in this process (like a notebook kernel), PostgreSQL committing meanwhile.
        stack.up(only=["capture"])
        pids = {st.name: st.pid for st in stack.status() if st.pid}
        pids["router (this process)"] = os.getpid()
        with PeakMemory(pids) as memory:
            began = time.perf_counter()
            insert_rows(stack, rows + 1, rows)
            route_until(router, 2 * rows)
            e2e_s = time.perf_counter() - began
        router.close()
    result = {
        "rows": rows,
        "postgres_insert_rows_per_s": pg_rate,
        "capture_rows_per_s": rows / capture_s,
        "router_events_per_s": rows / router_s,
        "router_us_per_event": router_s / rows * 1e6,
        "end_to_end_rows_per_s": rows / e2e_s,
        **{f"peak_rss_mb {name}": mb for name, mb in memory.peak_mb.items()},
        "peak_rss_mb total": sum(memory.peak_mb.values()),
    }
    print(f"throughput, {rows:,} row changes")
    for key, value in result.items():
        print(f"  {key:<40} {value:>12,.1f}")
    return result


if __name__ == "__main__":
    main()
