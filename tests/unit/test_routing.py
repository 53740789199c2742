"""The router's decision (`cdc_kit.router.routing.route`) on real recorded events, no services.

Events come from the recorded pgoutput bytes of tests/data/pgoutput, through the decoder and
capture's change rules, serialised as capture serialises them: what the router really reads.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from cdc_kit import olap
from cdc_kit.contract import build_event
from cdc_kit.lsn import str_to_lsn
from cdc_kit.router.routing import Record, TableRows, Truncate, route
from tests.recorded import change_events


def recorded_events(name: str) -> list[Record]:
    """The Kafka records capture would have produced for a recorded case."""
    events = [
        event
        for _, made in change_events(name, lambda relation: ["id"])  # capture asks the catalog
        for event in made
    ]
    return [Record("t", 0, i, e.key, e.encode()) for i, e in enumerate(events)]


class Accounts(olap.CdcOlapModelBase, olap.CdcFields):
    __table__ = "accounts"
    id: Annotated[int, "uint64"]
    name: str | None
    note: str | None


class Docs(olap.CdcOlapModelBase, olap.CdcFields):
    __table__ = "docs"
    id: Annotated[int, "uint64"]
    n: int | None
    body: str | None


class People(olap.CdcOlapModelBase, olap.CdcFields):
    __table__ = "people"
    id: Annotated[int, "uint64"]
    name: str | None
    bio: str | None


class Big(olap.CdcOlapModelBase, olap.CdcFields):
    __table__ = "big"
    id: Annotated[int, "uint64"]
    v: str | None


class JustId(olap.CdcOlapModelBase, olap.CdcFields):
    id: Annotated[int, "uint64"]


def model_for(table: str) -> type:
    return type(f"{table.title()}Olap", (JustId,), {"__table__": table})


def rows_of(batch: Any, table: str) -> list[dict[str, Any]]:
    model = next(w.model for w in batch.writes if w.table == table)
    return [
        dict(zip(olap.columns_of(model), row, strict=True))
        for write in batch.writes
        if isinstance(write, TableRows) and write.table == table
        for row in write.rows
    ]


def test_an_unchanged_toast_value_is_taken_from_the_row_routed_earlier_in_the_batch() -> None:
    batch = route(recorded_events("unchanged_toast"), {"docs": Docs})
    assert batch.dead == []
    insert, update, delete = rows_of(batch, "docs")
    assert len(insert["body"]) == 200_000 and update["body"] == insert["body"]  # not '' or None
    assert (update["n"], update["is_deleted"]) == (1, 0)
    assert (delete["is_deleted"], delete["body"]) == (1, None)  # a marker carries the key only
    assert insert["lsn"] < update["lsn"] < delete["lsn"]


def test_an_unchanged_toast_value_comes_from_the_warehouse_when_the_row_is_not_in_the_batch():
    records = recorded_events("unchanged_toast")[1:2]  # the update alone
    asked = []

    def stored(table: str, model: type, key: tuple, columns: list[str]) -> dict | None:
        asked.append((table, key, columns))
        return {"body": "stored text"}

    batch = route(records, {"docs": Docs}, stored)
    assert asked == [("docs", (1,), ["body"])]
    assert rows_of(batch, "docs")[0]["body"] == "stored text"

    nowhere = route(records, {"docs": Docs}, lambda *args: None)
    assert [(d.stage, "TOAST" in d.error) for d in nowhere.dead] == [("enrich", True)]


def test_a_primary_key_change_marks_the_old_key_deleted() -> None:
    batch = route(recorded_events("primary_key_change"), {"accounts": Accounts})
    rows = rows_of(batch, "accounts")
    assert [(r["id"], r["is_deleted"]) for r in rows] == [(5, 0), (5, 1)]
    # The new row's TOASTed note was not sent and is not in the batch under key 6: parked
    # with the reason, never written as ''.
    assert [(d.stage, "note" in d.error) for d in batch.dead] == [("enrich", True)]


def test_replica_identity_full_deletes_still_become_delete_markers() -> None:
    batch = route(recorded_events("identity_full"), {"people": People})
    assert batch.dead == []
    rows = rows_of(batch, "people")
    assert [(r["id"], r["name"], r["is_deleted"]) for r in rows] == [
        (1, "Bo", 0), (1, "Bob", 0), (1, "Bob", 1), (2, "Bob", 0), (2, "Bob", 1),
    ]  # fmt: skip
    assert rows[1]["bio"] == rows[0]["bio"] and len(rows[1]["bio"]) == 4000


def test_a_truncate_closes_the_rows_before_it_and_rows_after_it_survive() -> None:
    records = recorded_events("truncate")
    insert_after = build_event("parent", "insert", {"id": 9}, lsn=2**40, end_lsn=2**40 + 8)
    records.append(Record("t", 0, len(records), insert_after.key, insert_after.encode()))
    registry = {t: model_for(t) for t in ("parent", "child", "other")}
    batch = route(records, registry)
    assert batch.dead == []
    kinds = [(type(w).__name__, w.table) for w in batch.writes]
    assert kinds == [
        ("Truncate", "parent"), ("Truncate", "child"), ("Truncate", "other"),
        ("Truncate", "parent"), ("Truncate", "child"), ("TableRows", "parent"),
    ]  # fmt: skip
    assert all(w.lsn > 0 for w in batch.writes if isinstance(w, Truncate))


def test_progress_is_the_end_lsn_of_the_last_complete_transaction() -> None:
    records = recorded_events("streamed")
    batch = route(records, {"big": Big, "scratch": model_for("scratch")})
    events = [json.loads(r.value)["metadata"] for r in records]
    last = [e for e in events if e.get("last_in_txn")][-1]
    assert batch.progress_lsn == str_to_lsn(last["end_lsn"])
    assert 100 not in [r["id"] for r in rows_of(batch, "big")]  # the rolled-back savepoint
    # Half a transaction (its last event not yet seen) records no progress.
    assert route(records[:2], {"big": Big}).progress_lsn is None


def test_every_record_is_written_or_dead_lettered_with_its_stage() -> None:
    good = build_event("docs", "insert", {"id": 1, "n": 1, "body": "x"}, lsn=10)
    bad = [
        (b"\xff", "decode"),
        (b"{}", "decode"),
        (build_event("nobody", "insert", {"id": 1}, lsn=11).encode(), "lookup"),
        (build_event("docs", "insert", {"id": "one", "n": 1, "body": ""}, lsn=12).encode(),
         "validate"),
        (build_event("docs", "insert", {"id": 2, "body": ""}, lsn=13).encode(), "validate"),
    ]  # fmt: skip
    records = [Record("t", 0, 0, good.key, good.encode())]
    records += [Record("t", 0, i + 1, None, value) for i, (value, _) in enumerate(bad)]
    batch = route(records, {"docs": Docs})
    written = sum(len(w.rows) for w in batch.writes if isinstance(w, TableRows))
    assert batch.consumed == written + len(batch.dead) == len(records)
    assert [d.stage for d in batch.dead] == [stage for _, stage in bad]
    missing_n = batch.dead[-1].error
    assert "n" in missing_n and "Field required" in missing_n  # never a silent default
