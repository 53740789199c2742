"""End-to-end freshness: a commit in PostgreSQL -> the row visible in ClickHouse.

At each target rate (changes per second) a writer inserts customers one transaction at a
time and notes each commit time; a watcher polls `max(id)` in ClickHouse FINAL every 2 ms and
notes when each id became visible. Capture runs as the stack's service and the router in a
thread of this process, as in a notebook. Prints p50/p95/p99 per rate and saves a plot.

Run: `python bench/bench_freshness.py [--seconds 5] [--rates 10 100 1000]`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import measure_freshness, percentiles

from cdc_kit import oltp
from cdc_kit.router import Router
from cdc_kit.stack import scratch_stack


def plot(results: dict[int, dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = sorted(results)
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, style in (("p50", "o-"), ("p95", "s--"), ("p99", "^:")):
        ax.plot(rates, [results[r][key] for r in rates], style, label=key)
    ax.set_xscale("log")
    ax.set_xlabel("changes per second (single-row transactions)")
    ax.set_ylabel("commit -> visible in ClickHouse (ms)")
    ax.set_title("cdc-kit end-to-end freshness (embedded stack)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rates", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--plot", type=Path, default=Path(__file__).parent / "freshness.png")
    args = parser.parse_args(argv)
    results: dict[int, dict[str, float]] = {}
    with scratch_stack() as stack:
        engine = stack.pg_engine()
        oltp.create_all(engine)
        router = Router(stack)
        router.connect()  # creates the tables: the watcher queries them from the first moment
        router.start()
        measure_freshness(stack, 20, 1.0, 900_000)  # warm-up (connections, fetches): discarded
        next_id = 1_000_000
        for rate in args.rates:
            latencies = measure_freshness(stack, rate, args.seconds, next_id)
            next_id += len(latencies) + 10 * rate
            results[rate] = {**percentiles(latencies), "n": len(latencies)}
            print(
                f"  {rate:>5}/s  n={len(latencies):>5}  p50 {results[rate]['p50']:6.1f} ms  "
                f"p95 {results[rate]['p95']:6.1f} ms  p99 {results[rate]['p99']:6.1f} ms"
            )
        router.close()
    plot(results, args.plot)
    print(f"plot saved to {args.plot}")
    return {str(rate): values for rate, values in results.items()}


if __name__ == "__main__":
    main()
