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


def change_events(
    name: str, primary_key: Any = None, lsn: int | None = None
) -> list[tuple[dict[str, Any], Any]]:
    """(recorded row, events) per message of a case, as capture makes them: each message goes to
    the ChangeEventBuilder right after the decoder decoded it (the builder reads the decoder's
    relations). `lsn`: the LSN to give every message (default: its recorded one)."""
    from cdc_kit.capture.changes import ChangeEventBuilder
    from cdc_kit.lsn import str_to_lsn

    recorded = case(name)
    decoder = pg.Decoder(recorded["proto"])
    builder = ChangeEventBuilder(decoder, primary_key)
    out = []
    for m in recorded["messages"]:
        message = decoder.feed(bytes.fromhex(m["hex"]))
        at = str_to_lsn(m.get("lsn") or m["data_start"]) if lsn is None else lsn
        out.append((m, builder.feed(message, at)))
    return out


def decode(name: str) -> list[tuple[dict[str, Any], Any]]:
    """(recorded row, decoded message) for every message of a case, through one Decoder."""
    recorded = case(name)
    decoder = pg.Decoder(recorded["proto"])
    return [(m, decoder.feed(bytes.fromhex(m["hex"]))) for m in recorded["messages"]]
