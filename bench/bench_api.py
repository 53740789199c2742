"""Freshness through the seed's HTTP API: POST /api/customers -> the row in ClickHouse FINAL.

The seed promises "data appears in ClickHouse within 1-2 seconds of PostgreSQL insert". A
fresh embedded stack runs capture as its service, `python -m cdc_kit api` as a separate
process and the router in a thread of this process (as in a notebook). Requests are sent one
at a time at a steady rate; a watcher polls ClickHouse every 2 ms. Prints the latency from the
API's answer (the row is committed then) to the row being visible, and the request time.

Run: `python bench/bench_api.py [--requests 200] [--rate 20]`.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import percentiles

from cdc_kit import oltp
from cdc_kit.config import settings_env
from cdc_kit.router import Router
from cdc_kit.services.process import free_ports
from cdc_kit.stack import (
    Stack,
    scratch_stack,
)

REPO = Path(__file__).resolve().parent.parent


def start_api(stack: Stack) -> tuple[subprocess.Popen, httpx.Client]:
    port = free_ports(1)[0]
    server = subprocess.Popen(
        [sys.executable, "-m", "cdc_kit", "api", "--port", str(port), "--log-level", "warning"],
        env=settings_env(stack.settings),
        cwd=REPO,
    )
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if client.get("/health").status_code == 200:
                return server, client
        except httpx.TransportError:
            time.sleep(0.1)
    server.kill()
    raise RuntimeError("the API did not start")


def measure(stack: Stack, client: httpx.Client, requests: int, rate: float) -> dict[str, dict]:
    answered: dict[int, float] = {}
    visible: dict[int, float] = {}
    request_ms: list[float] = []
    done = threading.Event()

    def watch() -> None:
        ch = stack.clickhouse()
        while not done.is_set():
            try:
                ids = ch.query("SELECT id FROM local.customer FINAL").result_columns
            except Exception:  # noqa: BLE001 - the table appears with the first routed row
                ids = [[]]
            now = time.perf_counter()
            for row_id in ids[0] if ids else []:
                visible.setdefault(row_id, now)
            time.sleep(0.002)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    began = time.perf_counter()
    for n in range(requests):
        pause = began + n / rate - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        sent = time.perf_counter()
        answer = client.post(
            "/api/customers",
            json={
                "email": f"bench{n}@example.com",
                "name": "Bench",
                "country": "NL",
                "city": "Ede",
            },
        )
        now = time.perf_counter()
        answer.raise_for_status()
        answered[answer.json()["id"]] = now
        request_ms.append((now - sent) * 1000)
    deadline = time.perf_counter() + 30
    while set(answered) - set(visible) and time.perf_counter() < deadline:
        time.sleep(0.01)
    done.set()
    watcher.join()
    missing = set(answered) - set(visible)
    if missing:
        raise RuntimeError(f"{len(missing)} rows never arrived in ClickHouse")
    latencies = [(visible[row_id] - at) * 1000 for row_id, at in answered.items()]
    return {"api_to_clickhouse_ms": percentiles(latencies), "request_ms": percentiles(request_ms)}


def main(argv: list[str] | None = None) -> dict[str, dict]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--rate", type=float, default=20.0, help="requests per second")
    args = parser.parse_args(argv)
    with scratch_stack() as stack:
        oltp.create_all(stack.pg_engine())
        server, client = start_api(stack)
        router = Router(stack).start()
        try:
            results = measure(stack, client, args.requests, args.rate)
        finally:
            router.close()
            client.close()
            server.terminate()
            server.wait(15)
    print(f"API -> ClickHouse FINAL, {args.requests} POSTs at {args.rate:g}/s (goal: within 2 s)")
    for name, values in results.items():
        cells = "  ".join(f"{key} {value:7.1f}" for key, value in values.items())
        print(f"  {name:<22} {cells}")
    return results


if __name__ == "__main__":
    main()
