"""Cold start of the embedded stack and the idle memory of each service.

Run: `python bench/bench_stack.py [--runs 3]`. Each run uses a fresh state folder and free
ports, so it measures `up` from nothing (initdb included), then `up` again (already running).
Prints a table and returns the numbers for bench/run_all.py.
"""

from __future__ import annotations

import argparse
import statistics
import time

from cdc_kit.doctor import rss
from cdc_kit.stack import scratch_stack


def one_run() -> dict[str, float]:
    # only=[]: the scratch stack makes its folder and lab file; the timed `up` starts it all.
    with scratch_stack(only=[], confirm_after="broker") as stack:
        began = time.perf_counter()
        stack.up()
        cold = time.perf_counter() - began
        began = time.perf_counter()
        stack.up()
        warm = time.perf_counter() - began
        time.sleep(2)  # let services settle to their idle footprint
        result = {"cold_up_s": cold, "second_up_s": warm}
        for status in stack.status():
            if status.pid:
                result[f"rss_{status.name}_mb"] = rss(status.pid) / 2**20
        return result


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    runs = [one_run() for _ in range(args.runs)]
    summary = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
    print(f"embedded stack, median of {args.runs} runs")
    for key, value in summary.items():
        unit = "s" if key.endswith("_s") else "MB"
        print(f"  {key:<24} {value:8.2f} {unit}")
    return summary


if __name__ == "__main__":
    main()
