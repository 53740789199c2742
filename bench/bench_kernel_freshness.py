"""Freshness with the router inside a real Jupyter kernel, beside the service path.

Freshness is the time from a commit in PostgreSQL to the row being visible in ClickHouse with
FINAL. On one scratch stack, one path after the other, at the same rates:

- kernel: a Jupyter kernel, started with jupyter_client as JupyterLab starts one, runs
  `Router(...).start()` in a background thread, as lesson 06 does;
- service: `python -m cdc_kit route`, a process of its own, as outside a notebook.

A writer in this process inserts customers one transaction at a time and notes each commit
time; a watcher polls `max(id)` with FINAL every 2 ms. Prints p50/p95/p99 per path and rate.

Run: `python bench/bench_kernel_freshness.py [--seconds 5] [--rates 10 100]`.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import measure_freshness, percentiles
from jupyter_client.manager import start_new_kernel

from cdc_kit import oltp
from cdc_kit.config import settings_env
from cdc_kit.router import Router
from cdc_kit.stack import Stack, scratch_stack

KERNEL_START = """
from cdc_kit.router import Router
from cdc_kit.stack import get_stack
router = Router(get_stack())
router.connect()
router.start()
"""


@contextmanager
def router_in_a_kernel(stack: Stack) -> Iterator[None]:
    """A Jupyter kernel that routes in a background thread, like a notebook cell does."""
    manager, client = start_new_kernel(kernel_name="python3", env=settings_env(stack.settings))
    try:
        reply = client.execute_interactive(KERNEL_START, timeout=120, silent=True)
        if reply["content"]["status"] != "ok":
            raise RuntimeError(f"the kernel could not start the router: {reply['content']}")
        yield
    finally:
        client.execute_interactive("router.close()", timeout=60, silent=True)
        client.stop_channels()
        manager.shutdown_kernel()


@contextmanager
def router_as_a_service(stack: Stack) -> Iterator[None]:
    """`python -m cdc_kit route` in a process of its own."""
    log = open(stack.settings.home / "logs" / "bench_route.log", "w")  # noqa: SIM115
    process = subprocess.Popen(
        [sys.executable, "-m", "cdc_kit", "route"],
        env=settings_env(stack.settings),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
        log.close()


def run_path(
    stack: Stack, name: str, path: Callable, rates: list[int], seconds: float, first_id: int
) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, float]] = {}
    with path(stack):
        measure_freshness(stack, 20, 1.0, first_id)  # warm-up (the router's first fetch): discarded
        next_id = first_id + 1000
        for rate in rates:
            latencies = measure_freshness(stack, rate, seconds, next_id)
            next_id += int(rate * seconds) + 1000
            summary = {**percentiles(latencies), "n": len(latencies)}
            results[str(rate)] = summary
            print(
                f"  {name:<8} {rate:>5}/s  n={len(latencies):>5}  p50 {summary['p50']:6.1f} ms  "
                f"p95 {summary['p95']:6.1f} ms  p99 {summary['p99']:6.1f} ms"
            )
    return results


def main(argv: list[str] | None = None) -> dict[str, dict[str, dict[str, float]]]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rates", type=int, nargs="+", default=[10, 100])
    args = parser.parse_args(argv)
    print("freshness, commit -> visible in ClickHouse FINAL:")
    with scratch_stack() as stack:
        oltp.create_all(stack.pg_engine())
        with Router(stack) as router:
            router.connect()  # creates the ClickHouse tables: the watcher queries them at once
        results = {
            "kernel": run_path(stack, "kernel", router_in_a_kernel, args.rates, args.seconds,
                               1_000_000),
            "service": run_path(stack, "service", router_as_a_service, args.rates, args.seconds,
                                2_000_000),
        }  # fmt: skip
    return results


if __name__ == "__main__":
    main()
