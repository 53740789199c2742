"""Each embedded service does its real job, reached through the clients notebooks use."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pandas as pd
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError
from kafka import TopicPartition

from cdc_kit.config import settings_env
from cdc_kit.services.broker import create_topics
from cdc_kit.stack import Stack


def test_postgres_is_ready_for_logical_replication(stack: Stack) -> None:
    conn = stack.pg_connection()
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW wal_level")
            assert cur.fetchone() == ("logical",)
            cur.execute("SELECT current_database(), inet_server_addr()::text")
            assert cur.fetchone() == ("sqlmodel_db", "127.0.0.1/32")
            slot = f"probe_{uuid.uuid4().hex[:8]}"
            cur.execute(
                "SELECT slot_name FROM pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,)
            )
            assert cur.fetchone() == (slot,)
            cur.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
    finally:
        conn.close()


def test_broker_topics_have_one_partition(stack: Stack) -> None:
    consumer = stack.kafka_consumer()
    try:
        for topic in (stack.settings.cdc_topic, stack.settings.dlq_topic):
            assert consumer.partitions_for_topic(topic) == {0}
    finally:
        consumer.close()


def test_produce_consume_round_trip(stack: Stack) -> None:
    topic = f"roundtrip_{uuid.uuid4().hex[:8]}"
    create_topics(stack.settings.kafka_bootstrap, [topic])
    producer = stack.kafka_producer()
    sent = [{"n": i, "text": "é" * (i % 5)} for i in range(500)]
    for record in sent:
        producer.send(topic, key=f"k:{record['n']}".encode(), value=json.dumps(record).encode())
    producer.flush()
    producer.close()

    consumer = stack.kafka_consumer()
    consumer.assign([TopicPartition(topic, 0)])
    consumer.seek_to_beginning()
    received = _drain(consumer, expected=len(sent))
    consumer.close()
    assert [json.loads(m.value) for m in received] == sent
    assert received[0].key == b"k:0"


def test_consumer_group_commits_and_resumes_without_loss_or_duplicates(stack: Stack) -> None:
    topic = f"group_{uuid.uuid4().hex[:8]}"
    group = f"g_{uuid.uuid4().hex[:8]}"
    create_topics(stack.settings.kafka_bootstrap, [topic])
    producer = stack.kafka_producer()
    for i in range(300):
        producer.send(topic, value=str(i).encode())
    producer.flush()

    first = stack.kafka_consumer(topic, group_id=group)
    seen = [int(m.value) for m in _drain(first, expected=120, limit=120)]
    first.commit()
    first.close()

    for i in range(300, 350):
        producer.send(topic, value=str(i).encode())
    producer.flush()
    producer.close()

    second = stack.kafka_consumer(topic, group_id=group)
    seen += [int(m.value) for m in _drain(second, expected=230)]
    second.close()
    assert seen == list(range(350))


def test_clickhouse_replacing_merge_tree_through_the_stack_client(stack: Stack) -> None:
    ch = stack.clickhouse()
    table = f"probe_{uuid.uuid4().hex[:8]}"
    ch.command(
        f"CREATE TABLE `{table}` (id UInt64, name String, is_deleted UInt8, lsn UInt64) "
        "ENGINE = ReplacingMergeTree(lsn, is_deleted) ORDER BY id"
    )
    columns = ["id", "name", "is_deleted", "lsn"]
    ch.insert(table, [[1, "v1", 0, 10], [2, "v1", 0, 11]], column_names=columns)
    ch.insert(table, [[1, "v2", 0, 20]], column_names=columns)  # a newer version of id 1
    frame = pd.DataFrame({"id": [2], "name": [""], "is_deleted": [1], "lsn": [30]})
    ch.insert_df(table, frame)  # a delete of id 2

    assert ch.query(f"SELECT count() FROM `{table}`").result_rows == [(4,)]
    final = ch.query(f"SELECT id, name FROM `{table}` FINAL ORDER BY id").result_rows
    assert final == [(1, "v2")]
    assert ch.query(f"SELECT count() FROM `{table}`", settings={"final": 1}).result_rows == [(1,)]
    rows = ch.query(
        f"SELECT name FROM `{table}` WHERE id = {{id:UInt64}} ORDER BY lsn", parameters={"id": 1}
    ).result_rows
    assert rows == [("v1",), ("v2",)]

    with pytest.raises(DatabaseError, match="UNKNOWN_TABLE|Unknown table|does not exist"):
        ch.query("SELECT * FROM no_such_table")
    ch.command(f"DROP TABLE `{table}`")


CLIENT_SCRIPT = """
import sys
from cdc_kit.stack import get_stack
client = get_stack().clickhouse()  # as a second notebook would: the lab's own credentials
for i in range(50):
    client.insert(sys.argv[2], [[int(sys.argv[3]) * 1000 + i]], column_names=["id"])
    client.query("SELECT count() FROM " + sys.argv[2])
print("ok")
"""


def test_two_client_processes_at_once(stack: Stack) -> None:
    ch = stack.clickhouse()
    table = f"concurrent_{uuid.uuid4().hex[:8]}"
    ch.command(f"CREATE TABLE `{table}` (id UInt64) ENGINE = MergeTree ORDER BY id")
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CLIENT_SCRIPT, "-", table, str(n)],
            env=settings_env(stack.settings),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in (1, 2)
    ]
    outputs = [proc.communicate(timeout=120) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outputs
    assert ch.query(f"SELECT count(), uniqExact(id) FROM `{table}`").result_rows == [(100, 100)]


def _drain(consumer, expected: int, limit: int | None = None, polls: int = 60) -> list:
    """Poll until `expected` records arrived (at most `limit`), or give up after `polls` polls."""
    records: list = []
    for _ in range(polls):
        batch = consumer.poll(timeout_ms=500, max_records=(limit - len(records)) if limit else 500)
        for partition_records in batch.values():
            records.extend(partition_records)
        if len(records) >= expected:
            break
    return records
