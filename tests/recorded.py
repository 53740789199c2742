"""The recorded pgoutput cases of tests/data/pgoutput (see its README), read and decoded.

Shared by the decoder's tests (test_pgoutput) and the router's (test_routing, which turns the
decoded messages into the events capture would publish).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from cdc_kit import pgoutput as pg

DATA = Path(__file__).parent / "data" / "pgoutput"


@cache
def case(name: str) -> dict[str, Any]:
    """One recorded case as stored: its `proto` version and its `messages` (each with `hex`)."""
    return json.loads((DATA / f"{name}.json").read_text(encoding="utf-8"))


def decode(name: str) -> list[tuple[dict[str, Any], Any]]:
    """(recorded row, decoded message) for every message of a case, through one Decoder."""
    recorded = case(name)
    decoder = pg.Decoder(recorded["proto"])
    return [(m, decoder.feed(bytes.fromhex(m["hex"]))) for m in recorded["messages"]]
