"""The capture service: PostgreSQL's logical replication stream -> Kafka, in the kit's contract.

    PostgreSQL slot --pgoutput--> Decoder --> ChangeEventBuilder --> TransactionProducer --> topic
          ^                                                                |
          +------ confirm LSN <- min(broker acked, router wrote) <---------+

The slot is the durable log. Capture confirms a transaction to PostgreSQL only when every
message of it is safe: acknowledged by the broker and (with the memory-only embedded broker)
written to ClickHouse by the router. Anything not confirmed is sent again after a restart;
duplicates are harmless because ClickHouse keeps the highest LSN of each row.

Failures never end the service: it logs one clear line, waits, and starts a fresh session
(new replication connection, new producer), which resumes from the slot.
"""

from __future__ import annotations

import argparse
import gc
import logging
import select
import signal
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.extras
from psycopg2 import sql

from cdc_kit import clients, pgoutput, replication
from cdc_kit.capture import snapshot
from cdc_kit.capture.changes import ChangeEventBuilder
from cdc_kit.capture.heartbeat import heartbeat_path, write_heartbeat
from cdc_kit.capture.producer import TransactionProducer
from cdc_kit.config import Settings, get_settings
from cdc_kit.contract import OutgoingEvent, mark_commit
from cdc_kit.errors import CdcKitError, FixableError, one_line
from cdc_kit.lsn import lsn_to_str, str_to_lsn
from cdc_kit.progress import ensure_progress_table, read_progress

log = logging.getLogger("cdc_kit.capture")

PROTO_VERSION = 2  # streams large in-progress transactions instead of spilling them to disk


class BrokerRestarted(CdcKitError, RuntimeError):
    """The broker's cluster id changed: its topics (and our unconfirmed messages) are gone."""


@dataclass
class _StreamState:
    """What the streaming loop knows about delivery, as LSNs (ints)."""

    cluster_id: str
    acked_lsn: int = 0  # every transaction ending here or before is in the broker
    written_lsn: int = 0  # ... and (router mode) in ClickHouse
    sent_lsn: int = 0  # what we confirmed to PostgreSQL
    last_produced_end: int = 0
    warehouse: Any = None  # clickhouse-connect client when confirming after the router
    snapshot_pending: int | None = None  # consistent point of a snapshot not yet written
    conn: Any = None  # the normal (non-replication) PostgreSQL connection
    next_log: float = 0.0
    last_log_time: float = 0.0
    events_at_last_log: int = 0

    def written_up_to_date(self) -> bool:
        return self.warehouse is None or self.written_lsn >= self.last_produced_end


@dataclass
class CaptureStats:
    """Counters shown in the log and the status file."""

    events: int = 0
    transactions: int = 0
    snapshot_rows: int = 0
    confirmed_lsn: int = 0
    sessions: int = 0
    last_error: str = ""
    started_at: float = field(default_factory=time.time)


class Capture:
    """One capture worker. `run()` until `stop()`; safe to restart at any moment."""

    tick_interval = 0.2
    log_interval = 5.0

    def __init__(self, settings: Settings | None = None, heartbeat: Path | None = None) -> None:
        """`heartbeat`: where the service publishes its heartbeat (`up`/`status` read it).

        Only the service process passes one; a Capture run in a notebook or test does not,
        so it can never make the service look unhealthy.
        """
        self.settings = settings or get_settings()
        self.heartbeat = heartbeat
        self.stats = CaptureStats()
        self._stop = threading.Event()
        self._streaming_since: float | None = None

    # ---- public ----------------------------------------------------------------------
    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        """Stream until stopped; every failure starts a fresh session after a short pause.

        Any error ends only the session, never the service: PostgreSQL, the broker or
        ClickHouse being away for a while is normal, and the slot makes a retry lose nothing.
        """
        # Everything imported so far lives as long as the process: keep it out of the cyclic
        # collector's full passes, which otherwise walk it again and again while a large
        # transaction's events pile up (about 8% of capture's time).
        gc.freeze()
        backoff = 0.5
        while not self._stop.is_set():
            self.stats.sessions += 1
            self._streaming_since = None
            try:
                self._session()
            except Exception as exc:  # noqa: BLE001 - see docstring
                message = one_line(exc)
                self.stats.last_error = message
                self._write_status("retrying", message)
                if self._streaming_since and time.monotonic() - self._streaming_since > 30:
                    backoff = 0.5  # it had been healthy for a while: retry promptly
                log.error("capture session ended: %s; retrying in %.1f s", message, backoff)
                # The session's clients are closed; what kafka-python leaves in reference
                # cycles (sockets of connections that never came up) goes now, not whenever
                # the collector next runs: 20 broker restarts must not pile up descriptors.
                gc.collect()
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
        self._write_status("stopped")

    # ---- one session -----------------------------------------------------------------
    def _session(self) -> None:
        """One session: connections, producer and clients opened here are closed here."""
        s = self.settings
        with ExitStack() as opened:
            conn = clients.pg_connection(s)
            opened.callback(_close_quietly, conn)
            conn.autocommit = True
            replication.check_wal_level(conn)
            replication.ensure_publication(conn, s.publication_name)
            for table in replication.tables_without_primary_key(conn, s.publication_name):
                log.warning(
                    "table %s has no primary key: its updates and deletes fail at the source "
                    "and its rows cannot be deduplicated; add a primary key",
                    table,
                )
            conn.autocommit = False
            snapshot.ensure_state_table(conn)
            # The admin first: with the broker away it fails in 2 s, where the producer's
            # metadata request waits 10 s, so capture retries promptly.
            admin = clients.kafka_admin(s, bootstrap_timeout_ms=2000)
            opened.callback(_close_quietly, admin)
            broker_id = clients.cluster_id(admin)
            producer = TransactionProducer(s, clients.topic_partitions(admin, s.cdc_topic))
            opened.callback(_close_quietly, producer)
            warehouse = None
            if s.confirm_after == "router":
                warehouse = clients.clickhouse(s, database="default")
                opened.callback(_close_quietly, warehouse)
            # TimeZone=UTC: timestamptz values then arrive in UTC, as the contract sends them,
            # and are written without a round trip through datetime (capture/row_json.py).
            repl = clients.pg_connection(
                s,
                connection_factory=psycopg2.extras.LogicalReplicationConnection,
                options="-c TimeZone=UTC",
            )
            opened.callback(_close_quietly, repl)
            cursor = repl.cursor()
            snapshot_pending = self._prepare_slot(conn, cursor, producer)
            state = _StreamState(
                cluster_id=broker_id,
                snapshot_pending=snapshot_pending,
                conn=conn,
                warehouse=warehouse,
            )
            self._stream(cursor, producer, admin, state)

    def _primary_key_lookup(self, conn: Any) -> Callable[[str, str], list[str]]:
        """A cached `replication.primary_key_columns` on `conn`."""
        cache: dict[tuple[str, str], list[str]] = {}

        def lookup(schema: str, table: str) -> list[str]:
            if (schema, table) not in cache:
                cache[(schema, table)] = replication.primary_key_columns(conn, schema, table)
                conn.commit()
            return cache[(schema, table)]

        return lookup

    def _prepare_slot(self, conn: Any, cursor: Any, producer: TransactionProducer) -> int | None:
        """Create the slot (with an exported snapshot) and emit the snapshot, if not done yet.

        Returns the snapshot's consistent point while the router has not yet written it
        (router-confirm mode), so the streaming loop can mark it done later; else None.
        """
        s = self.settings
        active = replication.slot_active(conn, s.slot_name)
        conn.commit()
        if active:
            raise FixableError(
                f"replication slot '{s.slot_name}' is in use by another process "
                "(another capture running?); stop it or set CDC_KIT_SLOT_NAME"
            )
        state = snapshot.snapshot_state(conn, s.slot_name)
        if active is not None and (state is None or state[0]):
            return None  # snapshot done (or slot made elsewhere): stream from the slot
        if active is None:
            cursor.execute(
                sql.SQL("CREATE_REPLICATION_SLOT {} LOGICAL pgoutput (SNAPSHOT 'export')")
                .format(sql.Identifier(s.slot_name))
                .as_string(conn)
            )
            _, consistent_point, snapshot_name, _ = cursor.fetchone()
            snapshot.mark_snapshot(conn, s.slot_name, consistent_point, done=False)
        else:
            # The last snapshot may be lost (broker restart) or partial (crash): take it
            # again. The slot was never confirmed past its start, so it still holds every
            # change since; a fresh snapshot plus those changes converges (version 0 loses).
            assert state is not None  # an existing slot without a done snapshot returned above
            consistent_point, snapshot_name = state[1], None
            log.warning("snapshot not confirmed as written yet: taking it again")
        tables = replication.published_tables(conn, s.publication_name)
        conn.commit()
        snap_conn = clients.pg_connection(s)
        try:
            rows = self._produce_snapshot(
                snap_conn, snapshot_name, tables, producer, conn, str_to_lsn(consistent_point)
            )
        finally:
            snap_conn.close()
        log.info("snapshot: %d rows of %d tables at %s", rows, len(tables), consistent_point)
        if s.confirm_after == "router" and rows:
            return str_to_lsn(consistent_point)  # done once the router has written it
        snapshot.mark_snapshot(conn, s.slot_name, consistent_point, done=True, rows=rows)
        return None

    def _produce_snapshot(
        self,
        snap_conn: Any,
        snapshot_name: str | None,
        tables: list,
        producer: TransactionProducer,
        conn: Any,
        consistent_point: int,
    ) -> int:
        """Send the snapshot as one big 'transaction' ending at the slot's consistent point.

        Its last event carries `end_lsn` = consistent point and `last_in_txn`, so the router
        records that point as written once the whole snapshot is in ClickHouse.
        """
        lookup = self._primary_key_lookup(conn)
        count = 0
        chunk: list[OutgoingEvent] = []
        for event in snapshot.read_snapshot(snap_conn, snapshot_name, tables, lookup):
            chunk.append(event)
            if len(chunk) > 5000:  # keep the newest back: it may be the last one
                producer.send(chunk[:-1], end_lsn=0)
                producer.poll()
                count += len(chunk) - 1
                chunk = chunk[-1:]
        mark_commit(chunk[-1:], end_lsn=consistent_point)  # the snapshot ends at the slot's start
        producer.send(chunk, end_lsn=0)
        count += len(chunk)
        producer.flush()
        self.stats.snapshot_rows += count
        return count

    # ---- streaming -------------------------------------------------------------------
    def _stream(
        self, cursor: Any, producer: TransactionProducer, admin: Any, state: _StreamState
    ) -> None:
        s = self.settings
        try:
            cursor.start_replication(
                slot_name=s.slot_name,
                decode=False,
                options={
                    "proto_version": str(PROTO_VERSION),
                    "publication_names": s.publication_name,
                    "streaming": "on",
                },
            )
        except psycopg2.Error as exc:
            raise FixableError(f"cannot stream slot '{s.slot_name}': {one_line(exc)}") from exc
        lookup = self._primary_key_lookup(state.conn)
        decoder = pgoutput.Decoder(proto_version=PROTO_VERSION)
        builder = ChangeEventBuilder(decoder, lambda rel: lookup(rel.namespace, rel.name))
        if state.warehouse is not None:
            ensure_progress_table(state.warehouse, s.clickhouse_database)
        self._write_status("streaming")
        self._streaming_since = time.monotonic()
        log.info("streaming slot %s (publication %s)", s.slot_name, s.publication_name)
        next_tick = 0.0
        while not self._stop.is_set():
            message = cursor.read_message()
            if message is None:
                select.select([cursor], [], [], self.tick_interval)
            else:
                events = builder.feed(decoder.feed(message.payload), message.data_start)
                if events:
                    self._produce_transaction(producer, events, state)
            now = time.monotonic()
            if now >= next_tick:
                self._tick(cursor, builder, producer, admin, state, now)
                next_tick = now + self.tick_interval
        # Clean stop: confirm what the broker took (router mode: what the router wrote).
        producer.flush()
        self._tick(cursor, builder, producer, admin, state, time.monotonic(), force=True)

    def _produce_transaction(
        self, producer: TransactionProducer, events: list[OutgoingEvent], state: _StreamState
    ) -> None:
        producer.send(events, events[-1].end_lsn)
        state.last_produced_end = events[-1].end_lsn
        self.stats.events += len(events)
        self.stats.transactions += 1

    def _tick(
        self,
        cursor: Any,
        builder: ChangeEventBuilder,
        producer: TransactionProducer,
        admin: Any,
        state: _StreamState,
        now: float,
        force: bool = False,
    ) -> None:
        """Periodic work: learn what is safe, watch the broker, confirm to PostgreSQL, log."""
        idle = producer.in_flight == 0 and not builder.in_transaction
        safe = self._safe_lsn(cursor, producer, state, idle)
        if clients.cluster_id(admin) != state.cluster_id:
            # Checked before every confirmation: after a broker restart nothing may be
            # confirmed on the strength of acks or progress from the new, emptied broker.
            raise BrokerRestarted("the broker restarted (new cluster id): re-streaming")
        if safe > state.sent_lsn or force or idle:
            self._confirm(cursor, state, safe, reply=idle)
        self._write_status("streaming")
        if now >= state.next_log:
            self._log_progress(cursor, state, now)

    def _safe_lsn(
        self, cursor: Any, producer: TransactionProducer, state: _StreamState, idle: bool
    ) -> int:
        """How far every change is safe: acked by the broker and (router mode) written to
        ClickHouse by the router. Also marks a pending snapshot done once it is written."""
        s = self.settings
        state.acked_lsn = producer.poll()
        safe = state.acked_lsn
        if state.warehouse is not None:
            state.written_lsn = read_progress(
                state.warehouse, s.clickhouse_database, s.router_group
            )
            safe = min(safe, state.written_lsn)
            if state.snapshot_pending is not None and state.written_lsn >= state.snapshot_pending:
                point = lsn_to_str(state.snapshot_pending)
                snapshot.mark_snapshot(state.conn, s.slot_name, point, done=True)
                log.info("snapshot written to ClickHouse by the router: done")
                state.snapshot_pending = None
        if idle and state.written_up_to_date():
            # Nothing of ours is in flight: everything PostgreSQL decoded so far is safe. This
            # keeps an idle slot from pinning WAL when other databases or tables change.
            safe = max(safe, cursor.wal_end or 0)
        return safe

    def _confirm(self, cursor: Any, state: _StreamState, safe: int, reply: bool) -> None:
        """Tell PostgreSQL the slot may move up to `safe` (never backwards).

        force: psycopg2 otherwise only records the position and sends it at its next 10 s
        status interval, and a slot (and whoever waits on it) would lag that long.
        reply (when idle): the server answers with how far it has decoded, so WAL that carries
        no change of ours (DDL, vacuum) is confirmed within a tick, not ~10 s.
        """
        cursor.send_feedback(flush_lsn=max(safe, state.sent_lsn), force=True, reply=reply)
        state.sent_lsn = max(safe, state.sent_lsn)
        self.stats.confirmed_lsn = state.sent_lsn

    def _log_progress(self, cursor: Any, state: _StreamState, now: float) -> None:
        if state.next_log:
            elapsed = now - state.last_log_time
            rate = (self.stats.events - state.events_at_last_log) / max(elapsed, 1e-6)
            lag = max(0, (cursor.wal_end or 0) - state.sent_lsn)
            log.info(
                "events %d (%.0f/s), confirmed %s, lag %d bytes",
                self.stats.events,
                rate,
                lsn_to_str(state.sent_lsn),
                lag,
            )
        state.events_at_last_log = self.stats.events
        state.last_log_time = now
        state.next_log = now + self.log_interval

    def _write_status(self, state: str, error: str = "") -> None:
        """Beat the heartbeat that `status` and the CaptureService health check read."""
        if self.heartbeat is None:
            return
        write_heartbeat(
            self.heartbeat,
            state,
            error=error,
            events=self.stats.events,
            snapshot_rows=self.stats.snapshot_rows,
            confirmed_lsn=lsn_to_str(self.stats.confirmed_lsn),
            sessions=self.stats.sessions,
        )


def _close_quietly(resource: Any) -> None:
    """Close a session's resource; closing must never mask the error that ended the session."""
    try:
        resource.close()
    except Exception as exc:  # noqa: BLE001 - see docstring
        log.debug("closing %s failed: %s", type(resource).__name__, one_line(exc))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cdc_kit capture", description=__doc__)
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    logging.getLogger("kafka").setLevel(logging.ERROR)
    settings = get_settings()
    capture = Capture(settings, heartbeat=heartbeat_path(settings))
    signal.signal(signal.SIGTERM, lambda *_: capture.stop())
    signal.signal(signal.SIGINT, lambda *_: capture.stop())
    capture.run()
    return 0
