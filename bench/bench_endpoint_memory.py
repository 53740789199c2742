"""Memory and latency of the embedded ClickHouse endpoint, an older version beside this one.

Run: `python bench/bench_endpoint_memory.py [--baseline 36e9f6c] [--rounds 2]`.
Compares the baseline (`git show REV:cdc_kit/chdb_server.py`) with the working tree's, each on
a fresh data folder, through clickhouse-connect. Memory, each server alone: idle RSS, a
100,000-row insert of the customer shape (time, peak RSS, RSS after), peak RSS during
`count() FINAL` and `SELECT * FINAL` over those rows. Latency, both servers at once with the
timed calls alternating between them (other load on the machine slows both alike): the FINAL
queries, `SELECT 1`, a single-row insert. Prints one table; numbers only, no asserts.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import clickhouse_connect
import psutil

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from common import PeakMemory  # noqa: E402

from cdc_kit.services.process import free_ports  # noqa: E402

CUSTOMER_DDL = """
CREATE TABLE IF NOT EXISTS local.customer (
    id UInt64, email String, name String, country LowCardinality(String), city String,
    bio Nullable(String), createdAt DateTime64(6, 'UTC'), is_deleted UInt8, lsn UInt64
) ENGINE = ReplacingMergeTree(lsn, is_deleted) ORDER BY id
"""
COLUMNS = ["id", "email", "name", "country", "city", "bio", "createdAt", "is_deleted", "lsn"]
COUNTRIES = ["US", "DE", "FR", "JP", "BR"]


def customer_rows(count: int, start: int = 0) -> list[list[Any]]:
    now = datetime(2026, 11, 1, tzinfo=UTC)
    return [
        [i, f"user{i}@example.com", f"User {i}", COUNTRIES[i % 5], f"City {i % 97}", None, now,
         0, i + 1]
        for i in range(start, start + count)
    ]  # fmt: skip


def rss_mb(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 2**20


@contextmanager
def running_server(command: list[str], root: Path) -> Iterator[tuple[int, int, float]]:
    """Start one server on a free port; yields (pid, port, seconds until /ping answered)."""
    (port,) = free_ports(1)
    log = (root / "server.log").open("wb")
    began = time.monotonic()
    process = subprocess.Popen(
        [*command, "--port", str(port), "--data-dir", str(root / "data")],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"server exited: {(root / 'server.log').read_text()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=5):
                    break
            except OSError:
                time.sleep(0.01)
        yield process.pid, port, time.monotonic() - began
    finally:
        process.terminate()
        process.wait(30)
        log.close()


def medians_ms(
    clients: dict[str, Any], action: Callable[[Any], object], times: int
) -> dict[str, float]:
    """Median milliseconds of `action` per server, the servers taking turns call by call, so a
    busy moment of the machine slows them alike."""
    spent: dict[str, list[float]] = {name: [] for name in clients}
    for _ in range(times):
        for name, client in clients.items():
            began = time.perf_counter()
            action(client)
            spent[name].append((time.perf_counter() - began) * 1000)
    return {name: statistics.median(values) for name, values in spent.items()}


def memory(command: list[str]) -> dict[str, float]:
    """Resident memory of one server running alone (two would share chDB's library pages)."""
    out: dict[str, float] = {}
    with ExitStack() as stack:
        root = Path(tempfile.mkdtemp(prefix="cdc_kit_bench_endpoint_"))
        stack.callback(shutil.rmtree, root, ignore_errors=True)
        pid, port, out["startup_s"] = stack.enter_context(running_server(command, root))
        client = clickhouse_connect.get_client(
            host="127.0.0.1", port=port, autogenerate_session_id=False
        )
        time.sleep(1.0)  # let start-up work settle
        out["idle_mb"] = rss_mb(pid)
        client.command(CUSTOMER_DDL)
        with PeakMemory({"server": pid}, interval=0.01) as peak:
            began = time.perf_counter()
            client.insert("local.customer", customer_rows(100_000), column_names=COLUMNS)
            out["insert_100k_ms"] = (time.perf_counter() - began) * 1000
        out["insert_peak_mb"] = peak.peak_mb["server"]
        out["after_insert_mb"] = rss_mb(pid)
        with PeakMemory({"server": pid}, interval=0.01) as peak:
            for _ in range(20):
                client.command("SELECT count() FROM local.customer FINAL")
            for _ in range(3):
                client.query("SELECT * FROM local.customer FINAL")
        out["final_peak_mb"] = peak.peak_mb["server"]
        out["end_mb"] = rss_mb(pid)
    return out


def latency(commands: dict[str, list[str]]) -> dict[str, dict[str, float]]:
    """Median times with every server running at once, the servers taking turns call by call."""
    with ExitStack() as stack:
        clients = {}
        for name, command in commands.items():
            root = Path(tempfile.mkdtemp(prefix="cdc_kit_bench_endpoint_"))
            stack.callback(shutil.rmtree, root, ignore_errors=True)
            _, port, _ = stack.enter_context(running_server(command, root))
            client = clickhouse_connect.get_client(
                host="127.0.0.1", port=port, autogenerate_session_id=False
            )
            client.command(CUSTOMER_DDL)
            client.insert("local.customer", customer_rows(100_000), column_names=COLUMNS)
            clients[name] = client
        one = customer_rows(1, start=200_000)
        timings = {
            "count_final_ms": medians_ms(
                clients, lambda c: c.command("SELECT count() FROM local.customer FINAL"), 50
            ),
            "select_final_ms": medians_ms(
                clients, lambda c: c.query("SELECT * FROM local.customer FINAL"), 7
            ),
            "select_1_ms": medians_ms(clients, lambda c: c.command("SELECT 1"), 200),
            "insert_1_ms": medians_ms(
                clients, lambda c: c.insert("local.customer", one, column_names=COLUMNS), 50
            ),
        }
    return {name: {key: timings[key][name] for key in timings} for name in commands}


def measure(commands: dict[str, list[str]]) -> dict[str, dict[str, float]]:
    """One round: memory of each server alone, then latency of all side by side."""
    out = {name: memory(command) for name, command in commands.items()}
    for name, numbers in latency(commands).items():
        out[name].update(numbers)
    return out


def baseline_command(revision: str, folder: Path) -> list[str]:
    """The endpoint as it was at `revision`, run as a script (it imports nothing of cdc_kit)."""
    source = subprocess.run(
        ["git", "show", f"{revision}:cdc_kit/chdb_server.py"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout
    script = folder / "chdb_server_baseline.py"
    script.write_bytes(source)
    return [sys.executable, str(script)]


ROWS = [
    ("startup_s", "start to first /ping (s)", 2),
    ("idle_mb", "idle RSS (MB)", 0),
    ("insert_100k_ms", "100k-row insert (ms)", 0),
    ("insert_peak_mb", "peak RSS during insert (MB)", 0),
    ("after_insert_mb", "RSS after insert (MB)", 0),
    ("count_final_ms", "count() FINAL (ms, median)", 1),
    ("select_final_ms", "SELECT * FINAL 100k (ms, median)", 0),
    ("final_peak_mb", "peak RSS during FINAL (MB)", 0),
    ("select_1_ms", "SELECT 1 (ms, median)", 2),
    ("insert_1_ms", "single-row insert (ms, median)", 2),
    ("end_mb", "RSS at the end (MB)", 0),
]


def main(argv: list[str] | None = None) -> dict[str, list[dict[str, float]]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="36e9f6c", help="git revision to compare with")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="cdc_kit_bench_baseline_"))
    variants = {
        f"before ({args.baseline})": baseline_command(args.baseline, folder),
        "after (working tree)": [sys.executable, "-m", "cdc_kit.services.clickhouse_server"],
    }
    results: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
    try:
        for _ in range(args.rounds):
            for name, numbers in measure(variants).items():
                results[name].append(numbers)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    names = list(results)
    print(f"{'median of ' + str(args.rounds) + ' rounds':36}" + "".join(f"{n:>26}" for n in names))
    for key, label, digits in ROWS:
        cells = [statistics.median(run[key] for run in results[n]) for n in names]
        print(f"{label:36}" + "".join(f"{value:>26.{digits}f}" for value in cells))
    return results


if __name__ == "__main__":
    main()
