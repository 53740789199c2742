"""Shared helpers for the benchmarks: a throwaway stack on free ports, and timing summaries."""

from __future__ import annotations

import os
import shutil
import socket
import statistics
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil

from cdc_kit.config import Settings
from cdc_kit.stack import Stack


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


@contextmanager
def bench_stack(only: list[str] | None = None, **overrides: Any) -> Iterator[Stack]:
    """A fresh embedded stack in a temp folder (state removed afterwards)."""
    root = Path(tempfile.mkdtemp(prefix="cdc_kit_bench_"))
    root.chmod(0o755)  # reachable for the unprivileged PostgreSQL user when run as root
    pg, kafka, ch = free_ports(3)
    settings = Settings(
        home=root / "home", pg_port=pg, kafka_port=kafka, clickhouse_port=ch, **overrides
    )
    stack = Stack(settings)
    try:
        stack.up(only=only)
        yield stack
    finally:
        stack.down()
        shutil.rmtree(root, ignore_errors=True)


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
