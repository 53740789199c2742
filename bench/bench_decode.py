"""Decoder speed alone: pgoutput Insert bytes -> Python dict, on recorded real messages.

Run: `python bench/bench_decode.py [--rows 200000]`. Prints rows/s and microseconds per row.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from cdc_kit import pgoutput

RECORDED = Path(__file__).resolve().parent.parent / "tests/data/pgoutput/recorded.json"


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=200_000)
    args = parser.parse_args(argv)
    case = next(
        c for c in json.loads(RECORDED.read_text()) if c["name"] == "types_insert_update_delete"
    )
    messages = [bytes.fromhex(h) for h in case["hex"]]
    relation_bytes = next(m for m in messages if m[:1] == b"R")
    insert_bytes = next(m for m in messages if m[:1] == b"I")
    decoder = pgoutput.Decoder()
    relation = decoder.feed(relation_bytes)
    began = time.perf_counter()
    for _ in range(args.rows):
        pgoutput.row_to_dict(relation, decoder.feed(insert_bytes).new)
    took = time.perf_counter() - began
    result = {"decode_rows_per_s": args.rows / took, "decode_us_per_row": took / args.rows * 1e6}
    print(
        f"decode ({len(relation.columns)} columns of 13 types): "
        f"{result['decode_rows_per_s']:,.0f} rows/s, {result['decode_us_per_row']:.1f} us/row"
    )
    return result


if __name__ == "__main__":
    main()
