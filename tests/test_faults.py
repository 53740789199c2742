"""Faults in the middle of a workload lose nothing: PostgreSQL == ClickHouse FINAL afterwards.

A stack of its own (these tests restart services), a router in a thread, and in turn: capture
killed -9, the broker restarted (it forgets every message: the slot must re-deliver),
PostgreSQL restarted, and the ClickHouse endpoint restarted. The dead-letter queue must hold
only the malformed messages sent on purpose.
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated

import psutil
import pytest

from cdc_kit import olap, oltp
from cdc_kit.capture import snapshot
from cdc_kit.capture.heartbeat import heartbeat_path, read_heartbeat
from cdc_kit.capture.worker import Capture
from cdc_kit.router import Router
from cdc_kit.services.broker import create_topics
from cdc_kit.services.process import port_is_free, process_alive, wait_until
from cdc_kit.stack import Stack, ensure_running
from tests.conftest import (
    drop_slot_and_publication,
    isolated_settings,
    make_test_env,
    settings_from,
)
from tests.workload import Workload, wait_until_reconciled

MALFORMED = [b"{not json", b'{"metadata": {"table": "nope", "operation": "insert"}}']


@pytest.fixture(scope="module")
def fault_stack() -> Iterator[tuple[Stack, Router]]:
    env = make_test_env("cdc_kit_faults_")
    stack = ensure_running(settings_from(env))
    engine = stack.pg_engine()
    oltp.create_all(engine)
    oltp.load_sample_data(engine, progress=False)
    producer = stack.kafka_producer()
    for value in MALFORMED:
        producer.send(stack.settings.cdc_topic, value=value)
    producer.flush()
    producer.close()
    router = Router(stack).start()
    yield stack, router
    router.close()
    stack.down()
    shutil.rmtree(Path(env["CDC_KIT_HOME"]).parent, ignore_errors=True)


def kill_capture(stack: Stack) -> None:
    pid = stack.service("capture").running_pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    assert wait_until(lambda: not process_alive(pid), timeout=10)
    stack.up()  # what a learner (or a supervisor) does: `python -m cdc_kit up`


def restart(name: str) -> Callable[[Stack], None]:
    def do(stack: Stack) -> None:
        service = stack.service(name)
        assert service.stop()
        listening = [(host, port) for host, port, _ in service.ports()]
        assert wait_until(lambda: all(port_is_free(host, port) for host, port in listening), 10)
        stack.up()

    do.__name__ = f"restart_{name}"
    return do


FAULTS = [kill_capture, restart("broker"), restart("postgres"), restart("clickhouse")]


@pytest.mark.parametrize("fault", FAULTS, ids=[f.__name__ for f in FAULTS])
def test_fault_in_the_middle_loses_nothing(fault_stack, fault: Callable[[Stack], None]) -> None:
    stack, router = fault_stack
    engine = stack.pg_engine()
    workload = Workload(engine, seed=10 + FAULTS.index(fault))

    def inject(n: int) -> None:
        if n == 120:
            fault(stack)

    workload.run(250, between=inject)
    diff = wait_until_reconciled(stack, timeout=120)
    assert not diff, {t: str(d) for t, d in diff.items()}
    healthy = wait_until(lambda: all(status.healthy for status in stack.status()), timeout=20)
    assert healthy, (stack.status(), stack.service("capture").log_tail(15))
    parked = router.dead_letters()
    # Exactly the malformed messages, kept in the warehouse even across a broker restart.
    assert sorted(letter["stage"] for letter in parked) == ["decode", "lookup"]
    engine.dispose()


def test_broker_restart_with_unrouted_changes_redelivers_them_from_the_slot(fault_stack) -> None:
    """Changes the broker acked but the router had not written die with it; the slot has them."""
    stack, router = fault_stack
    engine = stack.pg_engine()
    router.stop()  # nothing is routed while the changes pile up in the broker
    heartbeat = heartbeat_path(stack.settings)
    before = read_heartbeat(heartbeat).get("events", 0)
    Workload(engine, seed=99).run(150)
    # Capture has produced them (its heartbeat counts them): the broker holds them, ClickHouse
    # does not.
    assert wait_until(lambda: read_heartbeat(heartbeat).get("events", 0) >= before + 150, 20)
    assert wait_until_reconciled(stack, timeout=1)  # proof: the warehouse is behind
    restart("broker")(stack)  # ... and now those messages are gone
    router.start()
    diff = wait_until_reconciled(stack, timeout=120)
    assert not diff, {t: str(d) for t, d in diff.items()}
    engine.dispose()


def test_snapshot_lost_with_the_broker_is_taken_again(fault_stack) -> None:
    """A snapshot the broker acked but no router wrote must not count as done."""
    stack, _ = fault_stack
    tag = uuid.uuid4().hex[:8]
    table = f"snap_{tag}"
    conn = stack.pg_connection()
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, v text)")
        cur.execute(f"INSERT INTO {table} SELECT g, 'v' || g FROM generate_series(1, 500) g")
    settings = isolated_settings(stack.settings, tag, confirm_after="router")
    topics = [settings.cdc_topic, settings.dlq_topic]
    capture = Capture(settings)
    worker = threading.Thread(target=capture.run, daemon=True)
    worker.start()
    try:
        assert wait_until(lambda: capture.stats.snapshot_rows >= 500, timeout=30)
        restart("broker")(stack)  # the snapshot's messages die with the broker
        create_topics(settings.kafka_bootstrap, topics)  # our extra topics, like `up` does

        class SnapOlap(olap.CdcOlapModelBase, olap.CdcFields):
            id: Annotated[int, "uint64"]
            v: str

        SnapOlap.__table__ = table
        router = Router(Stack(settings), registry={**olap.OLAP_MODELS, table: SnapOlap})
        router.start()
        ch = stack.clickhouse()
        query = f"SELECT count() FROM `{settings.clickhouse_database}`.`{table}` FINAL"

        def all_rows_arrived() -> bool:
            try:
                return ch.query(query).result_rows == [(500,)]
            except Exception:  # noqa: BLE001 - the table appears with the first routed row
                return False

        assert wait_until(all_rows_arrived, timeout=60)
        done = wait_until(lambda: snapshot.snapshot_state(conn, settings.slot_name)[0], 10)
        assert done, "capture should mark the snapshot done once the router wrote it"
        router.close()
    finally:
        capture.stop()
        worker.join(timeout=30)
        drop_slot_and_publication(conn, settings)
        conn.close()


def test_twenty_broker_restarts_leave_captures_files_and_threads_flat(fault_stack) -> None:
    """Each restart ends capture's session and starts a new one; no session may leave its
    producer, clients or sockets behind. The broker is killed (-9), as a crash does: a memory
    broker forgets everything either way, and SIGTERM can take Tansu 5 s. (A client that fails
    while connecting: tests/unit/test_clients.py.)"""
    stack, _ = fault_stack
    capture, broker = stack.service("capture"), stack.service("broker")
    heartbeat = heartbeat_path(stack.settings)

    def sessions() -> int:
        return int(read_heartbeat(heartbeat).get("sessions", 0))

    def in_state_after(state: str, session: int) -> bool:
        beat = read_heartbeat(heartbeat)
        return beat.get("state") == state and int(beat.get("sessions", 0)) > session

    def counts() -> tuple[int, int]:
        process = psutil.Process(capture.running_pid())
        return process.num_fds(), process.num_threads()

    assert wait_until(lambda: in_state_after("streaming", 0), timeout=30)
    before, capture_pid = counts(), capture.running_pid()
    [(host, port, _)] = broker.ports()
    for _ in range(20):
        session, pid = sessions(), broker.running_pid()
        os.kill(pid, signal.SIGKILL)
        assert wait_until(lambda pid=pid: not process_alive(pid), timeout=10)
        # The kernel frees the port a moment after the process is gone; an `up` that found it
        # taken would move the whole lab to new ports.
        assert wait_until(lambda: port_is_free(host, port), timeout=10)
        # Only the broker: a full `up` would replace a capture still backing off (not yet
        # streaming after 5 s), and the test must watch one capture process throughout.
        stack.up(only=["broker"])
        again = wait_until(lambda session=session: in_state_after("streaming", session), 60)
        assert again, capture.log_tail(15)
    assert capture.running_pid() == capture_pid, "capture itself must have survived"
    after = counts()
    assert after[0] <= before[0] + 4, f"open files: {before[0]} before, {after[0]} after"
    assert after[1] <= before[1] + 2, f"threads: {before[1]} before, {after[1]} after"
