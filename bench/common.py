"""Shared helpers for the benchmarks: peak memory and timing summaries.

A throwaway stack on free ports is `cdc_kit.stack.scratch_stack`, shared with the tests.
"""

from __future__ import annotations

import os
import statistics
import threading

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
