"""The whole pipeline under a seeded random workload: PostgreSQL == ClickHouse FINAL afterwards.

PostgreSQL -> capture -> broker -> router -> ClickHouse, all real. The workload mixes inserts,
updates (NULLs, 100 kB TOASTed text, unchanged TOAST), deletes (with cascades) and primary-key
changes across the four lesson tables. It runs three times: with the router in a thread, with
the router as a process killed -9 in the middle, and with messages delivered twice.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
from typing import Any

import pytest
from kafka import TopicPartition

from cdc_kit import oltp
from cdc_kit.config import settings_env
from cdc_kit.router import Router
from cdc_kit.stack import Stack
from tests.workload import Workload, wait_until_reconciled


def table_of(letter: dict[str, Any]) -> str | None:
    """The table a parked event came from, or None when its value is not the kit's JSON."""
    try:
        return json.loads(base64.b64decode(letter["value"]))["metadata"]["table"]
    except (ValueError, KeyError, TypeError):
        return None


def only_foreign_dead_letters(router: Router) -> None:
    """The lesson tables produce no dead letters.

    The session stack is shared: other tests park events of their own ad-hoc tables in the
    same group (no model, or a wrong column type on purpose), at whatever stage they fail.
    """
    for letter in router.dead_letters():
        assert table_of(letter) not in oltp.TABLES, letter
        assert not any(f"'{table}'" in letter["error"] for table in oltp.TABLES), letter


@pytest.fixture(scope="module")
def tables(stack: Stack) -> Any:
    engine = stack.pg_engine()
    oltp.create_all(engine)
    oltp.load_sample_data(engine, progress=False)
    return engine


def test_random_workload_reconciles(stack: Stack, tables: Any) -> None:
    router = Router(stack).start()
    try:
        Workload(tables, seed=1).run(700)
        diff = wait_until_reconciled(stack)
        assert not diff, {t: str(d) for t, d in diff.items()}
        stats = router.stats()
        assert stats["consumed"] == stats["routed"] + stats["dead_lettered"]
        only_foreign_dead_letters(router)
    finally:
        router.stop()
        router.close()


def test_router_killed_mid_stream_loses_nothing(stack: Stack, tables: Any) -> None:
    env = settings_env(stack.settings)

    def start() -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "cdc_kit", "route", "--batch-size", "200"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    state = {"process": start()}

    def kill_now_and_then(n: int) -> None:
        if n in (150, 400):
            os.kill(state["process"].pid, signal.SIGKILL)
            state["process"].wait()
            state["process"] = start()

    try:
        Workload(tables, seed=2).run(650, between=kill_now_and_then)
        diff = wait_until_reconciled(stack)
        assert not diff, {t: str(d) for t, d in diff.items()}
    finally:
        state["process"].send_signal(signal.SIGTERM)
        state["process"].wait(timeout=60)


def test_messages_delivered_twice_change_nothing(stack: Stack, tables: Any) -> None:
    """Copy a slice of the topic to its end again (what a crash-replay looks like)."""
    consumer = stack.kafka_consumer()
    partition = TopicPartition(stack.settings.cdc_topic, 0)
    consumer.assign([partition])
    consumer.seek_to_beginning()
    replay = []
    for _ in range(10):
        for records in consumer.poll(timeout_ms=300, max_records=5000).values():
            replay.extend(records)
    consumer.close()
    assert len(replay) > 1000
    producer = stack.kafka_producer()
    for record in replay[len(replay) // 3 :]:
        producer.send(stack.settings.cdc_topic, key=record.key, value=record.value)
    producer.flush()
    producer.close()

    router = Router(stack).start()
    try:
        Workload(tables, seed=3).run(200)
        diff = wait_until_reconciled(stack)
        assert not diff, {t: str(d) for t, d in diff.items()}
    finally:
        router.stop()
        router.close()
