"""The router on the real stack: bad input is dead-lettered with its reason, nothing is lost.

Each test gets its own topics, router group and ClickHouse database, so tests never see each
other's events; the events are hand-made in the exact contract capture produces.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import pytest
from kafka import TopicPartition

from cdc_kit import olap
from cdc_kit.router import Router
from cdc_kit.stack import Stack


def event(table: str, operation: str, lsn: str, payload: dict, **meta: Any) -> bytes:
    metadata = {"table": table, "operation": operation, "lsn": lsn, **meta}
    return json.dumps({"metadata": metadata, "payload": payload}).encode()


CUSTOMER = {
    "id": 1,
    "email": "ada@example.com",
    "name": "Ada",
    "country": "UK",
    "city": "London",
    "bio": None,
    "createdAt": "2026-01-01T00:00:00+00:00",
}


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
    (
        event("customer", "insert", "0/16", {**CUSTOMER, "id": -5}),
        "warehouse",
        "rejected the customer row",
    ),
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
    send(stack, [good_before, *(value for value, _, _ in BAD_INPUTS), good_after])
    stats = drain(router, expected=len(BAD_INPUTS) + 2)

    assert stats["consumed"] == len(BAD_INPUTS) + 2
    assert stats["consumed"] == stats["routed"] + stats["dead_lettered"]
    assert stats["dead_lettered"] == len(BAD_INPUTS)
    assert [row[0] for row in final_rows(stack, "customer")] == [1, 2]

    letters = dlq_messages(stack)
    assert len(letters) == len(BAD_INPUTS)
    for letter, (value, stage, reason) in zip(
        sorted(letters, key=lambda m: m["source"]["offset"]), BAD_INPUTS, strict=True
    ):
        assert letter["stage"] == stage, letter
        assert reason in letter["error"], letter
        if value is not None and stage != "decode":
            assert letter["original"]["text"].encode() == value  # original kept byte for byte
    parked = router.dead_letters()
    assert len(parked) == len(BAD_INPUTS)  # also in the warehouse (survives a broker restart)
    # Nothing ran: the SQL-looking table name was only ever a dictionary key.
    assert stack.clickhouse().query("EXISTS TABLE local.customer").result_rows in ([(0,)], [(1,)])


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
        tombstone = stack.clickhouse().query(
            f"SELECT is_deleted, lsn FROM `{db}`.`{table}` ORDER BY lsn DESC LIMIT 1"
        )
        assert tombstone.result_rows == [(1, 0x20)]


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
