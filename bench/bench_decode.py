"""Decoder speed alone: pgoutput Insert bytes -> Python values, no I/O.

Run: `python bench/bench_decode.py [--rows 200000]`. Prints rows/s and microseconds per row for
  - `wide`: the recorded 23-column row of every converted type (tests/data/pgoutput/types.json);
  - `narrow`: a synthetic 6-column row (bigint, int, text, numeric, timestamptz, bool), the shape
    of a typical OLTP table;
each as bytes -> Insert (`decode`) and bytes -> Insert -> dict (`decode+dict`); the best of five
rounds, since the machine may be busy with other work.
"""

from __future__ import annotations

import argparse
import json
import struct
import time
from collections.abc import Callable
from pathlib import Path

from cdc_kit import pgoutput

RECORDED = Path(__file__).resolve().parent.parent / "tests/data/pgoutput/types.json"


def recorded_wide() -> tuple[bytes, bytes]:
    """(Relation bytes, Insert bytes) of the recorded row of every type."""
    messages = [bytes.fromhex(m["hex"]) for m in json.loads(RECORDED.read_text())["messages"]]
    return next(m for m in messages if m[:1] == b"R"), next(m for m in messages if m[:1] == b"I")


def synthetic_narrow() -> tuple[bytes, bytes]:
    """A 6-column table and one row of it, built by hand in the wire format."""
    columns = [("id", 20), ("qty", 23), ("name", 25), ("price", 1700), ("at", 1184), ("ok", 16)]
    relation = b"R" + struct.pack("!I", 1) + b"public\x00orders\x00d" + struct.pack("!h", 6)
    for index, (name, oid) in enumerate(columns):
        relation += bytes([index == 0]) + name.encode() + b"\x00" + struct.pack("!Ii", oid, -1)
    values = ["123456", "3", "Widget, blue", "19.99", "2026-01-02 03:04:05.123456+00", "t"]
    row = struct.pack("!h", len(values))
    for value in values:
        row += b"t" + struct.pack("!i", len(value.encode())) + value.encode()
    return relation, b"I" + struct.pack("!I", 1) + b"N" + row


def best_seconds_per_row(run: Callable[[], object], rows: int, rounds: int = 5) -> float:
    """Fastest of `rounds` timed rounds: the machine is shared, the minimum is the decoder."""
    per_round = max(1, rows // rounds)
    best = float("inf")
    for _ in range(rounds):
        began = time.perf_counter()
        for _ in range(per_round):
            run()
        best = min(best, (time.perf_counter() - began) / per_round)
    return best


def measure(relation_bytes: bytes, insert_bytes: bytes, rows: int) -> dict[str, float]:
    decoder = pgoutput.Decoder()
    relation = decoder.feed(relation_bytes)
    feed, row = decoder.feed, decoder.row
    decode_s = best_seconds_per_row(lambda: feed(insert_bytes), rows)
    full_s = best_seconds_per_row(lambda: row(relation.relid, feed(insert_bytes).new), rows)
    return {
        "columns": len(relation.columns),
        "decode_rows_per_s": 1 / decode_s,
        "decode_us_per_row": decode_s * 1e6,
        "dict_rows_per_s": 1 / full_s,
        "dict_us_per_row": full_s * 1e6,
    }


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=200_000)
    args = parser.parse_args(argv)
    shapes = {"wide": recorded_wide(), "narrow": synthetic_narrow()}
    results = {name: measure(*shape, args.rows) for name, shape in shapes.items()}
    for name, r in results.items():
        print(
            f"{name:<7} {r['columns']:>2} columns  decode {r['decode_rows_per_s']:>9,.0f} rows/s "
            f"{r['decode_us_per_row']:5.2f} us/row   decode+dict {r['dict_rows_per_s']:>9,.0f} "
            f"rows/s {r['dict_us_per_row']:5.2f} us/row"
        )
    wide = results["wide"]
    # Flat keys kept for run_all.py / results.json: bytes -> dict on the wide recorded row.
    return {
        "decode_rows_per_s": wide["dict_rows_per_s"],
        "decode_us_per_row": wide["dict_us_per_row"],
        **{f"{name}_{key}": value for name, r in results.items() for key, value in r.items()},
    }


if __name__ == "__main__":
    main()
