"""Capture end to end: PostgreSQL changes arrive in the topic as the contract says.

Each test writes to its own freshly created table, so the shared topic can be filtered by table.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from kafka import TopicPartition

from cdc_kit.capture.worker import Capture
from cdc_kit.config import settings_env
from cdc_kit.lsn import str_to_lsn
from cdc_kit.services.process import wait_until
from cdc_kit.stack import Stack
from tests.conftest import drop_slot_and_publication, isolated_settings


@pytest.fixture()
def pg(stack: Stack) -> Iterator[Any]:
    conn = stack.pg_connection()
    conn.autocommit = True
    yield conn
    conn.close()


def new_table(pg: Any, ddl_columns: str, identity: str = "DEFAULT") -> str:
    name = f"cap_{uuid.uuid4().hex[:10]}"
    with pg.cursor() as cur:
        cur.execute(f"CREATE TABLE public.{name} ({ddl_columns})")
        cur.execute(f"ALTER TABLE public.{name} REPLICA IDENTITY {identity}")
    return name


def run(pg: Any, *statements: str) -> None:
    with pg.cursor() as cur:
        for statement in statements:
            cur.execute(statement)


def events_for(
    stack: Stack, table: str, count: int, topic: str | None = None, timeout: float = 30
) -> list[dict]:
    """Read the change topic from the start until `count` events of `table` arrived."""
    topic = topic or stack.settings.cdc_topic
    consumer = stack.kafka_consumer()
    consumer.assign([TopicPartition(topic, 0)])
    consumer.seek_to_beginning()
    found: list[dict] = []

    def collect(timeout_ms: int) -> None:
        for records in consumer.poll(timeout_ms=timeout_ms, max_records=10000).values():
            for record in records:
                event = json.loads(record.value)
                if event["metadata"]["table"] == table:
                    event["_key"] = record.key.decode()
                    found.append(event)

    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and len(found) < count:
            collect(300)
        collect(500)  # anything beyond `count` would be an unexpected extra event
    finally:
        consumer.close()
    return found


def test_insert_update_delete_arrive_in_order_with_contract(stack: Stack, pg: Any) -> None:
    table = new_table(
        pg,
        "id bigint PRIMARY KEY, name text NOT NULL, price numeric(10,2), active boolean, "
        "created timestamptz, note text",
    )
    run(
        pg,
        f"INSERT INTO {table} VALUES (1, 'Ann', 12.50, true, '2026-01-02 03:04:05+00', NULL)",
        f"UPDATE {table} SET name = 'Anna', price = 13.00 WHERE id = 1",
        f"DELETE FROM {table} WHERE id = 1",
    )
    events = events_for(stack, table, 3)
    assert [e["metadata"]["operation"] for e in events] == ["insert", "update", "delete"]
    lsns = [str_to_lsn(e["metadata"]["lsn"]) for e in events]
    assert lsns == sorted(lsns) and lsns[0] > 0
    first = events[0]
    assert first["_key"] == f"{table}:1"
    assert first["metadata"]["schema"] == "public"
    assert first["metadata"]["last_in_txn"] is True
    assert first["payload"] == {
        "id": 1,
        "name": "Ann",
        "price": "12.50",
        "active": True,
        "created": "2026-01-02T03:04:05+00:00",
        "note": None,
    }
    assert events[1]["payload"]["name"] == "Anna"
    # REPLICA IDENTITY DEFAULT: the delete carries the key, every other column is null.
    assert events[2]["payload"] == {
        "id": 1,
        "name": None,
        "price": None,
        "active": None,
        "created": None,
        "note": None,
    }


def test_full_replica_identity_delete_carries_the_old_row(stack: Stack, pg: Any) -> None:
    table = new_table(pg, "id int PRIMARY KEY, name text, city text", identity="FULL")
    run(pg, f"INSERT INTO {table} VALUES (7, 'Bo', 'Oslo')", f"DELETE FROM {table} WHERE id = 7")
    events = events_for(stack, table, 2)
    assert events[1]["metadata"]["operation"] == "delete"
    assert events[1]["payload"] == {"id": 7, "name": "Bo", "city": "Oslo"}
    assert events[1]["_key"] == f"{table}:7"  # the primary key, not every FULL identity column


@pytest.mark.parametrize("identity", ["DEFAULT", "FULL"])
def test_primary_key_change_deletes_the_old_key(stack: Stack, pg: Any, identity: str) -> None:
    table = new_table(pg, "id int PRIMARY KEY, name text", identity=identity)
    run(pg, f"INSERT INTO {table} VALUES (1, 'x')", f"UPDATE {table} SET id = 2 WHERE id = 1")
    events = events_for(stack, table, 3)
    ops = [(e["metadata"]["operation"], e["_key"]) for e in events]
    assert ops == [("insert", f"{table}:1"), ("delete", f"{table}:1"), ("update", f"{table}:2")]
    assert events[2]["payload"] == {"id": 2, "name": "x"}
    assert events[1]["metadata"]["lsn"] == events[2]["metadata"]["lsn"]  # one change, two rows


def test_unchanged_toast_is_never_sent_as_null(stack: Stack, pg: Any) -> None:
    big = "lorem ipsum " * 17000  # ~200 kB, stored out of line (TOAST)
    default = new_table(pg, "id int PRIMARY KEY, n int, bio text")
    full = new_table(pg, "id int PRIMARY KEY, n int, bio text", identity="FULL")
    for table in (default, full):
        with pg.cursor() as cur:
            cur.execute(f"INSERT INTO {table} VALUES (1, 0, %s)", (big,))
        run(pg, f"UPDATE {table} SET n = 1 WHERE id = 1")
    update = events_for(stack, default, 2)[1]
    assert update["metadata"]["unchanged_toast"] == ["bio"]
    assert "bio" not in update["payload"]
    assert update["payload"] == {"id": 1, "n": 1}
    update_full = events_for(stack, full, 2)[1]
    assert update_full["payload"]["bio"] == big  # filled from the old row
    assert "unchanged_toast" not in update_full["metadata"]


def test_rolled_back_transaction_emits_nothing(stack: Stack, pg: Any) -> None:
    table = new_table(pg, "id int PRIMARY KEY")
    pg.autocommit = False
    with pg.cursor() as cur:
        cur.execute(f"INSERT INTO {table} VALUES (1)")
    pg.rollback()
    pg.autocommit = True
    run(pg, f"INSERT INTO {table} VALUES (2)")
    events = events_for(stack, table, 1)
    assert [e["payload"]["id"] for e in events] == [2]


def test_truncate_emits_one_event_per_table(stack: Stack, pg: Any) -> None:
    table = new_table(pg, "id int PRIMARY KEY")
    run(pg, f"INSERT INTO {table} VALUES (1)", f"TRUNCATE {table}")
    events = events_for(stack, table, 2)
    assert [e["metadata"]["operation"] for e in events] == ["insert", "truncate"]
    assert events[1]["payload"] == {}


def streamed_transactions(pg: Any, slot: str) -> int:
    """How many transactions PostgreSQL streamed (in progress) through `slot` so far."""
    with pg.cursor() as cur:
        cur.execute(
            "SELECT coalesce(sum(stream_txns), 0) FROM pg_stat_replication_slots "
            "WHERE slot_name = %s",
            (slot,),
        )
        return int(cur.fetchone()[0])


def test_large_transaction_is_streamed_and_arrives_whole(stack: Stack, pg: Any) -> None:
    table = new_table(pg, "id int PRIMARY KEY, filler text")
    streamed_before = streamed_transactions(pg, stack.settings.slot_name)
    # Force PostgreSQL to stream in-progress transactions to capture (proto 2) early.
    run(pg, "ALTER SYSTEM SET logical_decoding_work_mem = '64kB'", "SELECT pg_reload_conf()")
    try:
        pg.autocommit = False
        with pg.cursor() as cur:
            cur.execute(
                f"INSERT INTO {table} SELECT g, repeat('x', 100) FROM generate_series(1, 5000) g"
            )
            cur.execute("SAVEPOINT s1")
            cur.execute(f"INSERT INTO {table} VALUES (-1, 'rolled back')")
            cur.execute("ROLLBACK TO SAVEPOINT s1")
        pg.commit()
        pg.autocommit = True
        events = events_for(stack, table, 5000, timeout=60)
    finally:
        pg.autocommit = True
        run(pg, "ALTER SYSTEM RESET logical_decoding_work_mem", "SELECT pg_reload_conf()")
    # It was streamed (not decoded at commit): the slot's statistics count it.
    assert wait_until(
        lambda: streamed_transactions(pg, stack.settings.slot_name) > streamed_before, timeout=10
    ), "PostgreSQL did not stream the transaction: the test would prove nothing"
    ids = [e["payload"]["id"] for e in events]
    assert ids == list(range(1, 5001))  # whole, in order, without the rolled-back subtransaction
    assert [e["metadata"]["last_in_txn"] for e in events].count(True) == 1
    assert len({e["metadata"]["commit_lsn"] for e in events}) == 1


def _capture_settings(stack: Stack, tag: str):
    return isolated_settings(stack.settings, tag, confirm_after="broker")


def test_snapshot_then_stream_has_no_gap_and_no_duplicate(stack: Stack, pg: Any) -> None:
    table = new_table(pg, "id int PRIMARY KEY, v int")
    run(pg, f"INSERT INTO {table} SELECT g, 0 FROM generate_series(1, 3000) g")
    tag = uuid.uuid4().hex[:8]
    settings = _capture_settings(stack, tag)

    stop_writing = threading.Event()
    written: list[int] = []

    def writer() -> None:
        conn = stack.pg_connection()
        conn.autocommit = True
        next_id = 3001
        with conn.cursor() as cur:
            while not stop_writing.is_set():
                cur.execute(f"INSERT INTO {table} VALUES (%s, 1)", (next_id,))
                written.append(next_id)
                next_id += 1
        conn.close()

    thread = threading.Thread(target=writer)
    thread.start()
    capture = Capture(settings)
    worker = threading.Thread(target=capture.run)
    worker.start()
    try:
        # Writes go on until capture has both snapshotted and streamed: the hand-off happened
        # while the table was being written.
        assert wait_until(
            lambda: capture.stats.snapshot_rows >= 3000 and capture.stats.events > 0, timeout=30
        )
        stop_writing.set()
        thread.join()
        total = 3000 + len(written)
        events = events_for(stack, table, total, topic=settings.cdc_topic, timeout=60)
    finally:
        capture.stop()
        worker.join(timeout=30)
        drop_slot_and_publication(pg, settings)
    ids = [e["payload"]["id"] for e in events]
    assert len(ids) == len(set(ids)), "a row arrived twice"
    assert set(ids) == set(range(1, total + 1)), "a row is missing"
    reads = [e for e in events if e["metadata"]["operation"] == "read"]
    assert len(reads) >= 3000 and all(e["metadata"]["lsn"] == "0/0" for e in reads)
    assert len(written) > 0, "the writer should have raced the snapshot"


def test_capture_killed_mid_stream_loses_nothing(stack: Stack, pg: Any) -> None:
    table = new_table(pg, "id int PRIMARY KEY")
    tag = uuid.uuid4().hex[:8]
    settings = _capture_settings(stack, tag)
    env = settings_env(settings)

    def start() -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "cdc_kit", "capture"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    process = start()
    try:
        with pg.cursor() as cur:
            for batch in range(40):
                cur.execute(
                    f"INSERT INTO {table} SELECT g FROM generate_series(%s, %s) g",
                    (batch * 100 + 1, batch * 100 + 100),
                )
                if batch == 20:
                    os.kill(process.pid, signal.SIGKILL)
                    process.wait()
                    process = start()
        events = events_for(stack, table, 4000, topic=settings.cdc_topic, timeout=60)
    finally:
        process.terminate()
        process.wait(timeout=30)
        drop_slot_and_publication(pg, settings)
    ids = {e["payload"]["id"] for e in events}
    assert ids == set(range(1, 4001))


def test_a_second_capture_on_the_same_slot_reports_it_clearly(stack: Stack) -> None:
    """The stack's capture holds the slot: another one must say so, not crash or steal it."""
    intruder = Capture(stack.settings)
    worker = threading.Thread(target=intruder.run, daemon=True)
    worker.start()
    try:
        deadline = time.monotonic() + 15
        while "in use by another process" not in intruder.stats.last_error:
            assert time.monotonic() < deadline, intruder.stats
            time.sleep(0.1)
    finally:
        intruder.stop()
        worker.join(timeout=30)
    owner = stack.service("capture")
    assert owner.healthy(), (owner.heartbeat(), owner.log_tail(8))  # the owner kept streaming


def test_a_table_without_primary_key_is_named_in_the_log(stack: Stack, pg: Any) -> None:
    table = f"nopk_{uuid.uuid4().hex[:8]}"
    run(pg, f"CREATE TABLE public.{table} (v int)", f"INSERT INTO public.{table} VALUES (1)")
    tag = uuid.uuid4().hex[:8]
    settings = _capture_settings(stack, tag)
    capture = Capture(settings)
    worker = threading.Thread(target=capture.run, daemon=True)
    with _captured_log("cdc_kit.capture") as records:
        worker.start()
        try:
            events = events_for(stack, table, 1, topic=settings.cdc_topic)
        finally:
            capture.stop()
            worker.join(timeout=30)
            drop_slot_and_publication(pg, settings)
            run(pg, f"DROP TABLE public.{table}")
    assert events[0]["payload"] == {"v": 1}  # its rows still flow (snapshot)
    warnings = [r.getMessage() for r in records if r.levelname == "WARNING"]
    assert any(f"public.{table} has no primary key" in w for w in warnings), warnings


@contextmanager
def _captured_log(name: str) -> Iterator[list[logging.LogRecord]]:
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep(level=logging.WARNING)
    logger = logging.getLogger(name)
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
