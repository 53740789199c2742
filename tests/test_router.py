"""The router on the real stack: bad input is dead-lettered with its reason, nothing is lost.

Each test gets its own topics, router group and ClickHouse database, so tests never see each
other's events; the events are hand-made in the exact contract capture produces.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from decimal import Decimal
from typing import Annotated, Any

import pytest
from kafka import TopicPartition
from pydantic import Field

from cdc_kit import olap, warehouse
from cdc_kit.config import settings_env
from cdc_kit.errors import CdcKitError
from cdc_kit.router import Router
from cdc_kit.router.lease import HANDOVER_WAIT_S
from cdc_kit.services.process import wait_until
from cdc_kit.stack import Stack
from tests.conftest import router_held_elsewhere
from tests.contract_events import CUSTOMER, event


def send(stack: Stack, values: list[bytes | None], topic: str | None = None) -> None:
    producer = stack.kafka_producer()
    for value in values:
        producer.send(topic or stack.settings.cdc_topic, key=b"k", value=value)
    producer.flush()
    producer.close()


def drain(router: Router, expected: int, rounds: int = 40) -> dict[str, Any]:
    for _ in range(rounds):
        router.step(timeout_ms=300)
        if router.stats()["consumed"] >= expected:
            break
    return router.stats()


def dlq_messages(stack: Stack) -> list[dict]:
    consumer = stack.kafka_consumer()
    consumer.assign([TopicPartition(stack.settings.dlq_topic, 0)])
    consumer.seek_to_beginning()
    messages = []
    for _ in range(10):
        for records in consumer.poll(timeout_ms=300).values():
            messages.extend(json.loads(r.value) for r in records)
    consumer.close()
    return messages


def final_rows(stack: Stack, table: str) -> list[tuple]:
    db = stack.settings.clickhouse_database
    return stack.clickhouse().query(f"SELECT * FROM `{db}`.`{table}` FINAL ORDER BY id").result_rows


BAD_INPUTS: list[tuple[bytes | None, str, str]] = [
    (b"\xff\xfe not utf-8", "decode", "not UTF-8"),
    (b'{"metadata": {"table": "customer"', "decode", "not JSON"),
    (b"[1, 2, 3]", "decode", "expected a JSON object"),
    (b'{"payload": {"id": 1}}', "decode", "missing 'metadata'"),
    (None, "decode", "empty message"),
    (event("customer", "insert", "zz/top", CUSTOMER), "decode", "not an LSN"),
    (event("customer", "merge", "0/10", CUSTOMER), "decode", "operation"),
    (event("secret_table", "insert", "0/11", {"id": 1}), "lookup", "no OLAP model"),
    (
        event("customer; DROP TABLE local.customer", "insert", "0/12", {"id": 1}),
        "lookup",
        "no OLAP model",
    ),
    (event("customer", "insert", "0/13", {**CUSTOMER, "email": None}), "validate", "email"),
    (event("customer", "insert", "0/14", {**CUSTOMER, "id": None}), "validate", "primary key"),
    (event("customer", "insert", "0/15", {**CUSTOMER, "id": "abc"}), "validate", "id"),
    # Never stored in UInt64: refused by validation, before ClickHouse (and its traceback).
    (event("customer", "insert", "0/16", {**CUSTOMER, "id": -5}), "validate", "id: Input should "
     "be greater than or equal to 0"),
    (
        event("customer", "update", "0/17", {"id": 99, "city": "Rome"}, unchanged_toast=["bio"]),
        "enrich",
        "TOAST",
    ),
]


def test_every_kind_of_bad_input_is_dead_lettered_and_routing_goes_on(isolated) -> None:
    stack, router = isolated
    good_before = event("customer", "insert", "0/1", CUSTOMER)
    good_after = event("customer", "insert", "0/100", {**CUSTOMER, "id": 2, "email": "b@x.io"})
    # A table name that is SQL aimed at this test's own table: it must stay a dictionary key.
    db = stack.settings.clickhouse_database
    injection = (event(f"customer; DROP TABLE `{db}`.`customer`", "insert", "0/18", {"id": 1}),
                 "lookup", "no OLAP model")  # fmt: skip
    bad_inputs = [*BAD_INPUTS, injection]
    send(stack, [good_before, *(value for value, _, _ in bad_inputs), good_after])
    stats = drain(router, expected=len(bad_inputs) + 2)

    assert stats["consumed"] == len(bad_inputs) + 2
    assert stats["consumed"] == stats["routed"] + stats["dead_lettered"]
    assert stats["dead_lettered"] == len(bad_inputs)
    # Both good rows are there, after the injection: the table was never dropped.
    assert [row[0] for row in final_rows(stack, "customer")] == [1, 2]

    letters = dlq_messages(stack)
    assert len(letters) == len(bad_inputs)
    for letter, (value, stage, reason) in zip(
        sorted(letters, key=lambda m: m["source"]["offset"]), bad_inputs, strict=True
    ):
        assert letter["stage"] == stage, letter
        assert reason in letter["error"], letter
        if value is not None and stage != "decode":
            assert letter["original"]["text"].encode() == value  # original kept byte for byte
    parked = router.dead_letters()
    assert len(parked) == len(bad_inputs)  # also in the warehouse (survives a broker restart)


def test_delete_of_every_table_validates_and_hides_the_row(isolated) -> None:
    stack, router = isolated
    rows = {
        "customer": CUSTOMER,
        "product": {"id": 1, "name": "Mug", "category": "tableware", "price": "11.00",
                    "description": None, "createdAt": "2026-01-01T00:00:00+00:00"},
        "order": {"id": 1, "customerId": 1, "orderDate": "2026-01-01T00:00:00+00:00",
                  "total": "11.00", "status": "paid", "createdAt": "2026-01-01T00:00:00+00:00"},
        "orderitem": {"id": 1, "orderId": 1, "productId": 1, "quantity": 1, "price": "11.00",
                      "createdAt": "2026-01-01T00:00:00+00:00"},
    }  # fmt: skip
    inserts = [event(t, "insert", "0/10", row) for t, row in rows.items()]
    deletes = [
        event(t, "delete", "0/20", {c: (v if c == "id" else None) for c, v in row.items()})
        for t, row in rows.items()
    ]
    send(stack, inserts)
    drain(router, 4)
    send(stack, deletes)  # a separate batch: ClickHouse sees both versions
    stats = drain(router, 8)
    assert stats["dead_lettered"] == 0, router.dead_letters()
    for table in rows:
        assert final_rows(stack, table) == []
        db = stack.settings.clickhouse_database
        marker = stack.clickhouse().query(
            f"SELECT is_deleted, lsn FROM `{db}`.`{table}` ORDER BY lsn DESC LIMIT 1"
        )
        assert marker.result_rows == [(1, 0x20)]


def test_null_stays_null_on_update_and_toast_is_kept(isolated) -> None:
    stack, router = isolated
    with_bio = {**CUSTOMER, "bio": "a long biography"}
    send(stack, [event("customer", "insert", "0/10", with_bio)])
    drain(router, 1)
    update = {k: v for k, v in CUSTOMER.items() if k != "bio"} | {"city": "Paris"}
    send(stack, [event("customer", "update", "0/20", update, unchanged_toast=["bio"])])
    drain(router, 2)
    send(stack, [event("customer", "update", "0/30", {**CUSTOMER, "bio": None})])
    drain(router, 3)
    db = stack.settings.clickhouse_database
    history = (
        stack.clickhouse()
        .query(f"SELECT lsn, city, bio FROM `{db}`.customer ORDER BY lsn")
        .result_rows
    )
    assert history == [(0x10, "London", "a long biography"), (0x20, "Paris", "a long biography"),
                       (0x30, "London", None)]  # fmt: skip


def test_truncate_marks_every_row_deleted(isolated) -> None:
    stack, router = isolated
    send(stack, [event("customer", "insert", f"0/{i}", {**CUSTOMER, "id": i}) for i in (1, 2, 3)])
    send(stack, [event("customer", "truncate", "0/50", {})])
    send(stack, [event("customer", "insert", "0/60", {**CUSTOMER, "id": 9})])
    stats = drain(router, 5)
    assert stats["dead_lettered"] == 0
    assert stats["consumed"] == stats["routed"] == 5  # the truncate itself counts as routed
    assert [row[0] for row in final_rows(stack, "customer")] == [9]


def test_replay_routes_parked_events_once_the_cause_is_fixed(isolated) -> None:
    stack, router = isolated
    send(stack, [event("supplier", "insert", "0/10", {"id": 7, "name": "Beans Ltd"})])
    stats = drain(router, 1)
    assert stats["dead_lettered"] == 1

    class SupplierOlap(olap.CdcOlapModelBase, olap.CdcFields):
        __table__ = "supplier"
        id: Annotated[int, "uint64"]
        name: str

    olap.register(SupplierOlap, registry=router.registry)  # the one step to add a table
    result = router.replay_dead_letters()
    assert (result.routed, result.dead_lettered) == (1, 0)
    assert [row[:2] for row in final_rows(stack, "supplier")] == [(7, "Beans Ltd")]
    assert router.dead_letters() == []
    assert router.replay_dead_letters().consumed == 0  # replayed letters are not replayed again


def test_a_message_delivered_twice_changes_nothing(isolated) -> None:
    stack, router = isolated
    insert = event("customer", "insert", "0/10", CUSTOMER)
    update = event("customer", "update", "0/20", {**CUSTOMER, "city": "Oslo"})
    send(stack, [insert, update])
    drain(router, 2)
    send(stack, [insert, update, insert])  # a replay after some crash
    drain(router, 5)
    assert [(r[0], r[4]) for r in final_rows(stack, "customer")] == [(1, "Oslo")]


def test_order_by_must_be_the_source_primary_key() -> None:
    class BadCustomer(olap.CustomerOlap):
        __order_by__ = ("country", "id")

    with pytest.raises(ValueError, match="must be the source primary key"):
        olap.register(BadCustomer, registry={})


# ---- safe to drive from a notebook --------------------------------------------------------
def test_calls_from_the_notebook_wait_for_the_running_batch(isolated) -> None:
    """step() beside the router's own thread: batches never overlap on one consumer."""
    stack, router = isolated
    active, overlaps = [0], []
    original = router.sink.write

    def watched_write(batch):
        active[0] += 1
        overlaps.append(active[0])
        try:
            time.sleep(0.01)
            return original(batch)
        finally:
            active[0] -= 1

    router.sink.write = watched_write
    inserts = [event("customer", "insert", f"0/{i}", {**CUSTOMER, "id": i}) for i in range(1, 41)]
    send(stack, inserts)
    router.start()
    for _ in range(20):
        router.step(timeout_ms=20)
        router.dead_letters()
    wait_until(lambda: router.stats()["consumed"] >= 40, timeout=20)
    router.stop()
    assert router.stats()["consumed"] == 40
    assert overlaps and max(overlaps) == 1


def test_an_idle_router_holds_nothing_between_calls(isolated) -> None:
    """A notebook that routed once and sits idle (or stopped at a failing check under Run All)
    never blocks the next lesson's router."""
    stack, first = isolated
    first.step(timeout_ms=10)
    second = Router(stack, registry=first.registry)
    try:
        second.step(timeout_ms=10)
        first.step(timeout_ms=10)  # and back: each takes the group only while it works
    finally:
        second.close()


def test_a_background_router_in_this_process_hands_over_when_asked(isolated) -> None:
    stack, first = isolated
    first.start()
    second = Router(stack, registry=first.registry)
    try:
        second.step(timeout_ms=10)
        assert not first.running
        assert f"pid {os.getpid()}" in first.stats()["handed_over_to"]
        assert second.stats()["running"] is False
        first.start()  # takes it back: second holds nothing between calls
        assert first.running and first.stats()["handed_over_to"] is None
    finally:
        first.close()
        second.close()


def test_a_background_router_elsewhere_hands_over_between_batches_and_says_so(isolated):
    stack, router = isolated
    send(stack, [event("customer", "insert", "0/1", CUSTOMER)])
    with router_held_elsewhere(stack.settings, hands_over=True) as other:
        began = time.monotonic()
        router.step(timeout_ms=10)
        assert time.monotonic() - began < 3
        said = other.stdout.readline()
        assert said.startswith(f"handed over to pid {os.getpid()} ("), said


def test_a_router_that_keeps_its_group_is_refused_in_one_line_and_freed_when_it_dies(isolated):
    stack, router = isolated
    with router_held_elsewhere(stack.settings, hands_over=False) as other:
        with pytest.raises(CdcKitError) as refused:
            router.step(timeout_ms=10)
        message = str(refused.value)
        assert f"pid {other.pid}" in message and "\n" not in message
        assert "keeps its group" in message and "another group" in message
    # The other process was killed like an interrupted kernel: nothing was released by hand.
    router.step(timeout_ms=10)  # the operating system released the lease


def test_a_router_that_does_not_answer_is_named_after_a_few_seconds(isolated) -> None:
    stack, router = isolated
    with router_held_elsewhere(stack.settings, hands_over=True) as other:
        other.send_signal(signal.SIGSTOP)  # a kernel that hangs
        try:
            began = time.monotonic()
            with pytest.raises(CdcKitError) as refused:
                router.step(timeout_ms=10)
            waited = time.monotonic() - began
        finally:
            other.send_signal(signal.SIGCONT)
        assert HANDOVER_WAIT_S <= waited < HANDOVER_WAIT_S + 3
        message = str(refused.value)
        assert f"pid {other.pid}" in message and "did not hand it over within" in message
        assert "\n" not in message
        assert not router.source.lease.request_path.exists(), "the request is taken back"


TAKE_TURNS = """
import sys
from cdc_kit import olap
from cdc_kit.router import Router
router = Router(registry=dict(olap.OLAP_MODELS))
for line in sys.stdin:
    consumed = 0
    while (result := router.step(timeout_ms=300)).consumed:
        consumed += result.consumed
    print(consumed, flush=True)
"""


def test_two_routers_in_two_processes_take_turns_and_route_every_event_once(isolated) -> None:
    """Each turn starts from the group's committed offset, never from a stale position: the
    router here read offsets 0-9 before the other one read 10-19, and must go on at 20."""
    stack, here = isolated
    other = subprocess.Popen(
        [sys.executable, "-c", TAKE_TURNS],
        env=settings_env(stack.settings),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )

    def turn_elsewhere() -> int:
        other.stdin.write("turn\n")
        other.stdin.flush()
        return int(other.stdout.readline())

    def turn_here() -> int:
        consumed = 0
        while (result := here.step(timeout_ms=300)).consumed:
            consumed += result.consumed
        return consumed

    try:
        sent = 0
        for turn in (turn_here, turn_elsewhere) * 3:
            batch = [
                event("customer", "insert", f"0/{sent + i}", {**CUSTOMER, "id": sent + i})
                for i in range(1, 11)
            ]
            send(stack, batch)
            sent += len(batch)
            assert turn() == len(batch), "each turn routes exactly what arrived since the last"
    finally:
        other.stdin.close()
        other.wait(30)
    assert len(final_rows(stack, "customer")) == sent


# ---- models the router could never write are refused early --------------------------------
def test_register_refuses_models_that_cannot_work() -> None:
    class NoCdcColumns(olap.CdcOlapModelBase):
        __table__ = "x"
        id: int

    class NoType(olap.CdcOlapModelBase, olap.CdcFields):
        __table__ = "x"
        id: int
        blob: object

    class NoTable(olap.CdcOlapModelBase, olap.CdcFields):
        id: int

    for model, reason in [
        (NoCdcColumns, "is_deleted"),
        (NoType, "no ClickHouse type"),
        (NoTable, "__table__"),
    ]:
        with pytest.raises(olap.ModelError, match=reason):
            olap.register(model, registry={})


def test_a_table_clickhouse_refuses_to_create_dead_letters_its_events(isolated) -> None:
    stack, router = isolated

    class Odd(olap.CdcOlapModelBase, olap.CdcFields):
        __table__ = "odd"
        id: Annotated[int, "uint64"]
        amount: Annotated[Decimal, "LowCardinality"]  # ClickHouse forbids this type

    olap.register(Odd, registry=router.registry)  # passes the model checks; ClickHouse says no
    send(stack, [event("odd", "insert", "0/10", {"id": 1, "amount": "1.50"}),
                 event("customer", "insert", "0/11", CUSTOMER)])  # fmt: skip
    stats = drain(router, 2)
    assert stats["dead_by_stage"] == {"warehouse": 1}
    assert stats["by_table"] == {"customer": 1}  # the router went on
    (letter,) = router.dead_letters()
    assert "refused to create table odd" in letter["error"]


def test_stats_count_dead_letters_by_stage_and_replays_as_routed(isolated) -> None:
    stack, router = isolated
    send(stack, [b"not json", event("supplier", "insert", "0/10", {"id": 7, "name": "B"})])
    stats = drain(router, 2)
    assert stats["dead_by_stage"] == {"decode": 1, "lookup": 1}

    class SupplierOlap(olap.CdcOlapModelBase, olap.CdcFields):
        __table__ = "supplier"
        id: Annotated[int, "uint64"]
        name: str

    router.register(SupplierOlap)
    router.replay_dead_letters()
    stats = router.stats()
    assert (stats["routed"], stats["replayed"], stats["by_table"]) == (1, 1, {"supplier": 1})
    assert stats["consumed"] + stats["replayed"] == stats["routed"] + stats["dead_lettered"]


# ---- no silent wrong values ----------------------------------------------------------------
def test_a_column_missing_from_an_insert_is_a_dead_letter_not_a_default(isolated) -> None:
    stack, router = isolated
    order = {"id": 1, "customerId": 1, "orderDate": "2026-01-01T00:00:00+00:00", "total": "5.00"}
    send(stack, [event("order", "insert", "0/10", order)])  # no status, no createdAt
    stats = drain(router, 1)
    assert stats["dead_by_stage"] == {"validate": 1}
    (letter,) = router.dead_letters()
    assert "status" in letter["error"] and "createdAt" in letter["error"]


def test_times_are_stored_right_whatever_the_routers_time_zone(isolated) -> None:
    stack, router = isolated
    saved = os.environ.get("TZ")
    os.environ["TZ"] = "Europe/Paris"
    time.tzset()
    try:
        send(stack, [event("customer", "insert", "0/10", CUSTOMER)])
        drain(router, 1)
    finally:
        if saved is None:
            os.environ.pop("TZ")
        else:
            os.environ["TZ"] = saved
        time.tzset()
    db = stack.settings.clickhouse_database
    stored = stack.clickhouse().query(f"SELECT toString(createdAt) FROM `{db}`.customer")
    assert stored.result_rows == [("2026-01-01 00:00:00.000000",)]


# ---- schema: insert settings, new columns ------------------------------------------------------
def test_insert_settings_keep_versions_of_one_key_in_one_batch(isolated) -> None:
    stack, router = isolated
    versions = [event("customer", "update", f"0/{i}", {**CUSTOMER, "city": f"c{i}"}) for i in
                range(1, 4)]  # fmt: skip
    send(stack, versions)
    drain(router, 3)
    db = stack.settings.clickhouse_database
    count = f"SELECT count() FROM `{db}`.customer"
    assert stack.clickhouse().query(count).result_rows == [(1,)]  # collapsed inside the INSERT

    keeping = Router(stack, registry=router.registry, group=router.group + "_k",
                     insert_settings={"optimize_on_insert": 0})  # fmt: skip
    try:
        keeping.step(timeout_ms=2000)
        assert stack.clickhouse().query(count).result_rows == [(4,)]
    finally:
        keeping.close()


def test_a_column_added_to_the_model_is_added_to_the_table(isolated) -> None:
    stack, router = isolated

    class Item(olap.CdcOlapModelBase, olap.CdcFields):
        __table__ = "item"
        id: Annotated[int, "uint64"]
        name: str

    router.register(Item)
    send(stack, [event("item", "insert", "0/10", {"id": 1, "name": "old"})])
    drain(router, 1)

    class ItemWithColour(Item):
        colour: str | None

    router.register(ItemWithColour)  # the table gets the column now, before any event
    db = stack.settings.clickhouse_database
    ch = stack.clickhouse()
    columns = ch.query(f"SELECT name, type FROM system.columns WHERE database = '{db}' "
                       "AND table = 'item' ORDER BY position").result_rows  # fmt: skip
    assert ("colour", "Nullable(String)") in columns
    send(stack, [event("item", "insert", "0/20", {"id": 2, "name": "new", "colour": "red"})])
    stats = drain(router, 2)
    assert stats["dead_lettered"] == 0
    rows = ch.query(f"SELECT id, name, colour FROM `{db}`.item FINAL ORDER BY id").result_rows
    assert rows == [(1, "old", None), (2, "new", "red")]  # old rows read the default


def test_the_seeds_views_answer_the_seeds_queries(isolated) -> None:
    stack, router = isolated
    send(stack, [
        event("customer", "insert", "0/10", CUSTOMER),
        event("order", "insert", "0/11", {"id": 5, "customerId": 1, "total": "9.50",
              "orderDate": "2026-01-02T00:00:00+00:00", "status": "paid",
              "createdAt": "2026-01-02T00:00:00+00:00"}),
        event("order", "delete", "0/12", {"id": 5}),
    ])  # fmt: skip
    drain(router, 3)
    db = stack.settings.clickhouse_database
    ch = stack.clickhouse(database=db)
    rows = ch.query("SELECT order_id, customer_name, total, is_deleted, lsn FROM order_fact "
                    "ORDER BY lsn DESC LIMIT 10").result_rows  # fmt: skip
    # The delete marker shows, with the defaults of a key-only delete, as the seed's README says.
    assert rows == [(5, "", Decimal("0"), 1, 0x12)]
    assert ch.query("SELECT customer_id, name FROM customer_dim").result_rows == [(1, "Ada")]


def test_rows_wait_while_a_column_type_differs_and_flow_once_it_is_altered(isolated) -> None:
    stack, router = isolated

    class Parcel(olap.CdcOlapModelBase, olap.CdcFields):
        __table__ = "parcel"
        id: Annotated[int, "uint64"]
        cost: Decimal = Field(max_digits=6, decimal_places=2)

    class WiderParcel(Parcel):
        cost: Decimal = Field(max_digits=9, decimal_places=2)

    router.register(Parcel)
    router.connect()  # the table is made with Decimal(6, 2)
    router.register(WiderParcel)  # ClickHouse keeps Decimal(6, 2): the kit reports, never alters
    send(stack, [event("parcel", "insert", "0/10", {"id": 1, "cost": "12345.67"})])
    stats = drain(router, 1)
    assert stats["dead_by_stage"] == {"warehouse": 1}
    (letter,) = router.dead_letters()
    assert "Decimal(6, 2) in ClickHouse but Decimal(9, 2)" in letter["error"]
    assert "MODIFY COLUMN `cost` Decimal(9, 2)" in letter["error"]

    db = stack.settings.clickhouse_database
    ch = stack.clickhouse()
    ch.command(f"ALTER TABLE `{db}`.parcel MODIFY COLUMN `cost` Decimal(9, 2)")  # the person
    assert router.replay_dead_letters().routed == 1
    rows = ch.query(f"SELECT id, cost FROM `{db}`.parcel FINAL").result_rows
    assert rows == [(1, Decimal("12345.67"))]


def test_a_column_is_added_at_the_first_event_and_a_dropped_one_is_kept(isolated) -> None:
    """No register() call: the model of the table changes in the registry (a service restarted
    with new code); the first event of the new model extends the table. A column the source
    dropped parks events at validate until the model follows; ClickHouse keeps the column."""
    stack, router = isolated

    class Crate(olap.CdcOlapModelBase, olap.CdcFields):
        __table__ = "crate"
        id: Annotated[int, "uint64"]
        label: str

    olap.register(Crate, registry=router.registry)
    send(stack, [event("crate", "insert", "0/10", {"id": 1, "label": "old"})])
    drain(router, 1)

    class CrateWithSize(Crate):
        size: int | None

    olap.register(CrateWithSize, registry=router.registry)  # the router is not told
    send(stack, [event("crate", "insert", "0/20", {"id": 2, "label": "new", "size": 3})])
    assert drain(router, 2)["dead_lettered"] == 0
    db = stack.settings.clickhouse_database
    ch = stack.clickhouse()
    rows = ch.query(f"SELECT id, label, size FROM `{db}`.crate FINAL ORDER BY id").result_rows
    assert rows == [(1, "old", None), (2, "new", 3)]

    # The source drops `label`: its events lack it and wait, with the reason.
    send(stack, [event("crate", "insert", "0/30", {"id": 3, "size": 4})])
    stats = drain(router, 3)
    assert stats["dead_by_stage"] == {"validate": 1}
    assert "label" in router.dead_letters()[0]["error"]

    class CrateWithoutLabel(olap.CdcOlapModelBase, olap.CdcFields):
        __table__ = "crate"
        id: Annotated[int, "uint64"]
        size: int | None

    router.register(CrateWithoutLabel)
    assert router.replay_dead_letters().routed == 1
    change = warehouse.sync_table(ch, CrateWithoutLabel, db)
    assert change.not_in_model == ["label"]  # kept: old rows keep their labels
    rows = ch.query(f"SELECT id, label, size FROM `{db}`.crate FINAL ORDER BY id").result_rows
    assert rows == [(1, "old", None), (2, "new", 3), (3, "", 4)]
