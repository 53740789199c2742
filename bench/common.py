"""Shared helpers for the benchmarks: peak memory and timing summaries.

A throwaway stack on free ports is `cdc_kit.stack.scratch_stack`, used by every benchmark.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from typing import Any

import psutil


class PeakMemory:
    """Samples resident memory (process + children) of named pids in a thread; keeps the peak."""

    def __init__(self, pids: dict[str, int], interval: float = 0.1) -> None:
        self.pids = pids
        self.interval = interval
        self.peak_mb: dict[str, float] = dict.fromkeys(pids, 0.0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            for name, pid in self.pids.items():
                try:
                    proc = psutil.Process(pid)
                    # Services fork helpers (PostgreSQL backends) that count; but this
                    # process's children are the services themselves, counted on their own.
                    own = pid == os.getpid()
                    procs = [proc] if own else [proc, *proc.children(recursive=True)]
                    rss = sum(p.memory_info().rss for p in procs) / 2**20
                except psutil.Error:
                    continue
                self.peak_mb[name] = max(self.peak_mb[name], rss)
            self._stop.wait(self.interval)


def percentiles(values: list[float]) -> dict[str, float]:
    """p50/p95/p99 and max of a list of numbers."""
    ordered = sorted(values)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {
        "p50": statistics.median(ordered),
        "p95": pick(0.95),
        "p99": pick(0.99),
        "max": ordered[-1],
    }


INSERT = (
    'INSERT INTO customer (id, email, name, country, city, "createdAt") '
    "VALUES (%s, %s, 'Fresh', 'NL', 'Ede', now())"
)


def measure_freshness(stack: Any, rate: int, seconds: float, first_id: int) -> list[float]:
    """Latencies (ms) of `rate * seconds` single-row transactions, commit -> visible (FINAL).

    A writer inserts customers one transaction at a time at a steady rate and notes each
    commit time; a watcher polls `max(id)` in ClickHouse FINAL every 2 ms.
    """
    count = int(rate * seconds)
    committed: dict[int, float] = {}
    visible: dict[int, float] = {}
    done = threading.Event()

    def watch() -> None:
        ch = stack.clickhouse()
        seen = first_id - 1
        deadline = None
        while seen < first_id + count - 1:
            newest = ch.query("SELECT max(id) FROM local.customer FINAL").result_rows[0][0] or 0
            now = time.perf_counter()
            for row_id in range(max(seen + 1, first_id), newest + 1):
                visible[row_id] = now
            seen = max(seen, newest)
            if done.is_set():
                deadline = deadline or now + 30  # a router that stalls must not hang the bench
                if now > deadline:
                    break
            time.sleep(0.002)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    conn = stack.pg_connection()
    began = time.perf_counter()
    with conn.cursor() as cur:
        for n in range(count):
            row_id = first_id + n
            pause = began + n / rate - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            cur.execute(INSERT, (row_id, f"k{row_id}@example.com"))
            conn.commit()
            committed[row_id] = time.perf_counter()
    conn.close()
    done.set()
    watcher.join(timeout=60)
    return [(visible[i] - committed[i]) * 1000 for i in committed if i in visible]
