"""The message contract is byte-stable: what capture publishes for every recorded pgoutput case
(every column type, special values, updates, deletes, TOAST, streams, truncates) and for a
snapshot row is exactly what commit b6168ae published.

`tests/data/golden_events.json` was written by b6168ae's own code from the recorded
cases; a change to capture may make it faster, never different. A deliberate change of the
contract rewrites the file, in a commit that says why (consumers parse these bytes).
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest

from cdc_kit.contract import build_event, mark_commit
from tests.recorded import DATA, change_events

GOLDEN = json.loads((DATA.parent / "golden_events.json").read_text(encoding="utf-8"))


def primary_key(relation: Any) -> list[str]:
    """What the golden file was made with: `id`, else the first column."""
    names = [column.name for column in relation.columns]
    return ["id"] if "id" in names else names[:1]


@pytest.mark.parametrize("case", sorted(GOLDEN))
def test_every_recorded_case_publishes_the_same_bytes(case: str) -> None:
    published = [
        {"key": event.key.decode(), "value": event.encode().decode()}
        for _, events in change_events(case, primary_key)
        for event in events
    ]
    assert published == GOLDEN[case]


def test_a_snapshot_row_publishes_the_same_bytes() -> None:
    row = {"id": 7, "price": Decimal("12.50"), "tiny": Decimal("0.0000001"),
           "at": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), "d": date(2026, 1, 2),
           "raw": b"\x01\x02", "f": 1e-05, "name": "héllo ☃", "none": None,
           "flag": True}  # fmt: skip
    event = build_event("t", "read", row, lsn=0, key_columns=["id"], schema="public",
                        snapshot="00000003-00000002-1")  # fmt: skip
    mark_commit([event], end_lsn=0x1B18E40)
    assert event.key == b"t:7"
    assert event.encode().decode() == (
        '{"metadata":{"table":"t","operation":"read","lsn":"0/0","schema":"public",'
        '"snapshot":"00000003-00000002-1","end_lsn":"0/1B18E40","last_in_txn":true},'
        '"payload":{"id":7,"price":"12.50","tiny":"1E-7","at":"2026-01-02T03:04:05+00:00",'
        '"d":"2026-01-02","raw":"\\\\x0102","f":1e-05,"name":"héllo ☃","none":null,"flag":true}}'
    )
