"""The pgoutput decoder on real recorded bytes (tests/data/pgoutput) and on hand-built ones."""

from __future__ import annotations

import json
import math
import struct
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from cdc_kit import pgoutput as pg
from cdc_kit.change_events import ChangeEventBuilder

RECORDED = {
    case["name"]: case
    for case in json.loads((Path(__file__).parent / "data/pgoutput/recorded.json").read_text())
}


def decode(name: str) -> list:
    case = RECORDED[name]
    decoder = pg.Decoder(case["proto"])
    return [decoder.feed(bytes.fromhex(h)) for h in case["hex"]]


def of(messages: list, kind: type) -> list:
    return [m for m in messages if isinstance(m, kind)]


def test_every_type_converts_exactly() -> None:
    messages = decode("types_insert_update_delete")
    relation = of(messages, pg.Relation)[0]
    assert (relation.namespace, relation.name, relation.replica_identity) == (
        "public",
        "typed",
        "d",
    )
    assert [c.name for c in relation.columns if c.is_key] == ["id"]
    row = pg.row_to_dict(relation, of(messages, pg.Insert)[0].new)
    assert row["id"] == 1 and row["small"] == 7
    assert row["num"] == Decimal("12.50") and str(row["num"]) == "12.50"
    assert row["txt"] == "héllo" and row["vc"] == "v" and row["flag"] is True
    assert row["ts"] == datetime(2026, 1, 2, 3, 4, 5, 123456)  # timestamp: naive
    assert row["tstz"] == datetime(2026, 1, 2, 1, 4, 5, tzinfo=UTC)  # timestamptz: UTC
    assert row["d"] == date(2026, 1, 2)
    assert row["doc"] == {"a": [1, 2]}
    assert row["u"] == "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
    assert row["raw"] == b"\xde\xad\xbe\xef"
    assert math.isnan(row["f"])
    assert row["missing"] is None


def test_transactions_are_framed_and_lsns_increase() -> None:
    messages = decode("types_insert_update_delete")
    begins, commits = of(messages, pg.Begin), of(messages, pg.Commit)
    assert len(begins) == len(commits) == 3
    for begin, commit in zip(begins, commits, strict=True):
        assert begin.final_lsn == commit.commit_lsn
        assert commit.end_lsn > commit.commit_lsn
    assert [c.commit_lsn for c in commits] == sorted(c.commit_lsn for c in commits)
    assert begins[0].commit_ts.tzinfo is not None


def test_default_identity_delete_sends_only_the_key() -> None:
    messages = decode("types_insert_update_delete")
    relation = of(messages, pg.Relation)[0]
    delete = of(messages, pg.Delete)[0]
    assert delete.old_kind == "K"
    old = pg.row_to_dict(relation, delete.old)
    assert old["id"] == 1 and all(v is None for k, v in old.items() if k != "id")
    update = of(messages, pg.Update)[0]
    assert update.old is None  # key unchanged, identity DEFAULT: no old tuple


def test_full_identity_sends_the_old_row() -> None:
    messages = decode("replica_identity_full")
    relation = of(messages, pg.Relation)[0]
    assert relation.replica_identity == "f"
    update, delete = of(messages, pg.Update)[0], of(messages, pg.Delete)[0]
    assert update.old_kind == "O" and pg.row_to_dict(relation, update.old)["name"] == "Bo"
    assert delete.old_kind == "O"
    assert pg.row_to_dict(relation, delete.old) == {"id": 1, "name": "Bob", "bio": "short"}


def test_primary_key_change_carries_the_old_key() -> None:
    messages = decode("primary_key_change")
    relation = of(messages, pg.Relation)[0]
    update = of(messages, pg.Update)[0]
    assert update.old_kind == "K"
    assert pg.row_to_dict(relation, update.old)["id"] == 5
    assert pg.row_to_dict(relation, update.new)["id"] == 6


def test_unchanged_toast_is_a_marker_not_null() -> None:
    messages = decode("unchanged_toast")
    relation = of(messages, pg.Relation)[0]
    update = of(messages, pg.Update)[0]
    row = pg.row_to_dict(relation, update.new)
    assert row["bio"] is pg.UNCHANGED_TOAST and row["bio"] is not None
    assert row["n"] == 1
    insert = pg.row_to_dict(relation, of(messages, pg.Insert)[0].new)
    assert len(insert["bio"]) == len("lorem ipsum ") * 17000


def test_capture_rules_on_recorded_toast_update() -> None:
    builder = ChangeEventBuilder()
    events = []
    for message in decode("unchanged_toast"):
        events += builder.feed(message, 0x100)
    update = events[-1].value
    assert update["metadata"]["operation"] == "update"
    assert update["metadata"]["unchanged_toast"] == ["bio"]
    assert "bio" not in update["payload"]


def test_truncate_and_logical_message() -> None:
    truncate = of(decode("truncate"), pg.Truncate)[0]
    assert len(truncate.relids) == 2 and truncate.restart_identity and not truncate.cascade
    message = of(decode("logical_message"), pg.Message)[0]
    assert (message.prefix, message.content, message.transactional) == ("cdc-kit", b"hello", True)


def test_streamed_transaction_with_rolled_back_savepoint() -> None:
    messages = decode("streamed_with_subxact_abort")
    starts = of(messages, pg.StreamStart)
    assert starts and starts[0].first_segment and not any(s.first_segment for s in starts[1:])
    assert len(of(messages, pg.StreamStop)) == len(starts)
    abort = of(messages, pg.StreamAbort)[0]
    assert abort.xid != abort.subxid  # only the savepoint rolled back
    inserts = of(messages, pg.Insert)
    assert all(i.xid is not None for i in inserts)  # xid present inside streams
    commit = of(messages, pg.StreamCommit)[0]
    assert commit.end_lsn > commit.commit_lsn

    builder = ChangeEventBuilder()
    events = []
    for message in messages:
        events += builder.feed(message, 1)
    ids = [e.value["payload"]["id"] for e in events]
    assert ids == [*range(10, 1010), 5000]  # the savepoint's rows (2000-2999) are gone
    assert events[-1].value["metadata"]["last_in_txn"] is True


# ---- hand-built messages ---------------------------------------------------------------
def text_tuple(*values: str | None) -> bytes:
    out = struct.pack("!h", len(values))
    for value in values:
        if value is None:
            out += b"n"
        else:
            raw = value.encode()
            out += b"t" + struct.pack("!i", len(raw)) + raw
    return out


RELATION = (
    b"R" + struct.pack("!I", 42) + b"public\x00t\x00d" + struct.pack("!h", 2)
    + b"\x01id\x00" + struct.pack("!Ii", 23, -1)
    + b"\x00name\x00" + struct.pack("!Ii", 25, -1)
)  # fmt: skip
HAND_BUILT = {
    "B": b"B" + struct.pack("!QqI", 0x10, 0, 7),
    "C": b"C" + struct.pack("!bQQq", 0, 0x10, 0x20, 0),
    "O": b"O" + struct.pack("!Q", 0x10) + b"origin\x00",
    "R": RELATION,
    "Y": b"Y" + struct.pack("!I", 999) + b"public\x00mood\x00",
    "I": b"I" + struct.pack("!I", 42) + b"N" + text_tuple("1", "Ann"),
    "U": b"U" + struct.pack("!I", 42) + b"K" + text_tuple("1", None) + b"N" + text_tuple("2", "A"),
    "D": b"D" + struct.pack("!I", 42) + b"K" + text_tuple("1", None),
    "T": b"T" + struct.pack("!ib", 1, 3) + struct.pack("!I", 42),
    "M": b"M" + struct.pack("!bQ", 1, 0x10) + b"p\x00" + struct.pack("!i", 2) + b"hi",
    "S": b"S" + struct.pack("!Ib", 9, 1),
    "E": b"E",
    "c": b"c" + struct.pack("!IbQQq", 9, 0, 0x30, 0x40, 0),
    "A": b"A" + struct.pack("!II", 9, 10),
}


def test_hand_built_messages_decode() -> None:
    decoded = {kind: pg.decode_message(data) for kind, data in HAND_BUILT.items()}
    assert decoded["B"] == pg.Begin(0x10, pg.PG_EPOCH, 7)
    assert decoded["C"].end_lsn == 0x20
    assert decoded["O"].name == "origin"
    assert decoded["Y"].name == "mood"
    assert pg.row_to_dict(decoded["R"], decoded["I"].new) == {"id": 1, "name": "Ann"}
    assert decoded["U"].old_kind == "K" and decoded["U"].new == ("2", "A")
    assert decoded["D"].old == ("1", None)
    assert decoded["T"].cascade and decoded["T"].restart_identity and decoded["T"].relids == (42,)
    assert decoded["M"].content == b"hi"
    assert decoded["S"] == pg.StreamStart(9, True)
    assert decoded["c"].end_lsn == 0x40
    assert decoded["A"] == pg.StreamAbort(9, 10)


@pytest.mark.parametrize("kind", sorted(set(HAND_BUILT) - {"E"}))
def test_truncated_input_raises_a_decode_error(kind: str) -> None:
    data = HAND_BUILT[kind]
    for cut in range(1, len(data)):
        with pytest.raises(pg.PgOutputDecodeError):
            pg.decode_message(data[:cut])


def test_unknown_and_two_phase_types_are_refused_clearly() -> None:
    with pytest.raises(pg.PgOutputDecodeError, match="unknown message type 'Z'"):
        pg.decode_message(b"Z")
    with pytest.raises(pg.PgOutputDecodeError, match="two-phase"):
        pg.decode_message(b"P" + b"\x00" * 30)
    with pytest.raises(pg.PgOutputDecodeError, match="empty"):
        pg.decode_message(b"")
    bad_kind = b"I" + struct.pack("!I", 42) + b"N" + struct.pack("!h", 1) + b"x"
    with pytest.raises(pg.PgOutputDecodeError, match="unknown column kind"):
        pg.decode_message(bad_kind)


def test_unknown_type_oid_stays_text_and_markers_pass_through() -> None:
    assert pg.convert_value(123456, "whatever") == "whatever"
    assert pg.convert_value(23, None) is None
    assert pg.convert_value(23, pg.UNCHANGED_TOAST) is pg.UNCHANGED_TOAST
    assert pg.convert_value(1184, "infinity") == "infinity"
    assert pg.convert_value(1700, "NaN").is_nan()
