"""Run every benchmark, print one table and write bench/results.json (`make bench`).

Numbers, not asserts: compare them with the goals below and with earlier results.json files.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_decode  # noqa: E402
import bench_freshness  # noqa: E402
import bench_stack  # noqa: E402
import bench_throughput  # noqa: E402

GOALS = {
    "cold up (s)": "<= 3",
    # 2x and 1.3x what commit b6168ae measured on a 2-core machine (README, Benchmarks)
    "capture rows/s": ">= 74,000",
    "router events/s": ">= 45,000",
    "end to end rows/s": ">= 42,000",
    "freshness p50 @100/s (ms)": "<= 100",
    "freshness p99 @100/s (ms)": "<= 300",
    "peak RSS total (MB)": "<= 1,000",
}


def main() -> dict:
    began = time.time()
    decode = bench_decode.main([])
    stack = bench_stack.main(["--runs", "3"])
    throughput = bench_throughput.main(["--rows", "100000"])
    freshness = bench_freshness.main([])
    results = {
        "machine": {
            "python": platform.python_version(),
            "cpus": psutil.cpu_count(),
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        },
        "decode": decode,
        "stack": stack,
        "throughput": throughput,
        "freshness_ms": freshness,
        "took_s": time.time() - began,
    }
    summary = {
        "cold up (s)": stack["cold_up_s"],
        "capture rows/s": throughput["capture_rows_per_s"],
        "router events/s": throughput["router_events_per_s"],
        "end to end rows/s": throughput["end_to_end_rows_per_s"],
        "freshness p50 @100/s (ms)": freshness["100"]["p50"],
        "freshness p99 @100/s (ms)": freshness["100"]["p99"],
        "peak RSS total (MB)": throughput["peak_rss_mb total"],
    }
    print("\nsummary" + " " * 27 + "measured        goal")
    for key, value in summary.items():
        print(f"  {key:<30} {value:>12,.1f}   {GOALS[key]}")
    (HERE / "results.json").write_text(json.dumps(results, indent=2, default=float))
    print(f"\nwrote {HERE / 'results.json'} and {HERE / 'freshness.png'}")
    return results


if __name__ == "__main__":
    main()
