"""The router: change events from Kafka -> the right ClickHouse table, in batches.

    topic --poll--> parse --> registry lookup --> OLAP model --> group by table --> INSERT
                      \\            \\                  \\                             |
                       +------------+------------------+--> dead-letter topic + table
                                                                                    |
                           commit offsets <-- record progress (end LSN) <-----------+

Rules that make it safe to lift into production:
- no `if table == ...`: the registry maps a table name to its OLAP model; registering a model
  is the only step to route a new table;
- a bad event never stops the router: it becomes a dead letter with its reason and stage, so
  `consumed == routed + dead_lettered` always holds;
- offsets are committed only after the batch is in ClickHouse (at-least-once); replays are
  harmless because ReplacingMergeTree keeps the highest LSN per primary key;
- after each batch the router records the end LSN of the last transaction it fully handled,
  which capture needs before it lets PostgreSQL forget those changes.
"""

from __future__ import annotations

import argparse
import base64
import logging
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from clickhouse_connect.driver.binding import quote_identifier
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError
from kafka import TopicPartition
from kafka.admin import KafkaAdminClient
from kafka.structs import OffsetAndMetadata

from cdc_kit import olap
from cdc_kit.config import Settings
from cdc_kit.dead_letters import (
    DEAD_LETTER_COLUMNS,
    DEAD_LETTER_TABLE,
    DeadLetter,
    dead_letter_rows,
    ensure_dead_letter_table,
    make_dead_letter,
)
from cdc_kit.errors import first_line, one_line
from cdc_kit.events import CdcEvent, EventParseError, parse_event
from cdc_kit.lsn import str_to_lsn
from cdc_kit.progress import ensure_progress_table, write_progress
from cdc_kit.services.broker import cluster_id
from cdc_kit.stack import Stack, get_stack

log = logging.getLogger("cdc_kit.router")


class RoutingError(Exception):
    """An event that cannot be routed; `stage` says where it failed."""

    def __init__(self, stage: str, message: str) -> None:
        super().__init__(message)
        self.stage = stage


@dataclass
class BatchResult:
    """What one `step()` did."""

    consumed: int = 0
    routed: int = 0
    dead_lettered: int = 0
    tables: Counter = field(default_factory=Counter)
    progress_lsn: int | None = None

    def __str__(self) -> str:
        tables = ", ".join(f"{t}: {n}" for t, n in sorted(self.tables.items())) or "none"
        return (
            f"consumed {self.consumed}, routed {self.routed} ({tables}), "
            f"dead-lettered {self.dead_lettered}"
        )


@dataclass
class _PendingRow:
    table: str
    key: tuple
    row: dict[str, Any]
    record: Any  # the Kafka record it came from, for a dead letter if ClickHouse rejects it


class _TableBuffer:
    """One batch's rows waiting for their INSERT, the newest pending row per key (for TOAST
    merges), and what has been written or rejected so far."""

    def __init__(self) -> None:
        self.rows: dict[str, list[_PendingRow]] = {}
        self.latest: dict[tuple[str, tuple], dict[str, Any]] = {}
        self.written: Counter = Counter()
        self.rejected: list[DeadLetter] = []

    def add(self, pending: _PendingRow) -> None:
        self.rows.setdefault(pending.table, []).append(pending)
        self.latest[(pending.table, pending.key)] = pending.row


class Router:
    """Routes the change topic into ClickHouse. Use `step()`, `start()`/`stop()`, `stats()`."""

    def __init__(
        self,
        stack: Stack | None = None,
        settings: Settings | None = None,
        registry: dict[str, type] | None = None,
        group: str | None = None,
        batch_size: int = 5000,
        poll_timeout_ms: int = 200,
    ) -> None:
        self.stack = stack or get_stack(settings)
        self.settings = self.stack.settings
        self.registry = registry if registry is not None else olap.OLAP_MODELS
        self.group = group or self.settings.router_group
        self.batch_size = batch_size
        self.poll_timeout_ms = poll_timeout_ms
        self._partition = TopicPartition(self.settings.cdc_topic, 0)
        self._consumer: Any = None
        self._producer: Any = None
        self._admin: Any = None
        self._cluster_id: str | None = None
        self._ch: Any = None
        self._created_tables: set[str] = set()
        self._progress_lsn = 0
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._stats: dict[str, Any] = {
            "consumed": 0,
            "routed": 0,
            "dead_lettered": 0,
            "batches": 0,
            "by_table": Counter(),
            "dead_by_stage": Counter(),
            "last_error": "",
            "last_batch_at": None,
            "restarts_seen": 0,
            "replayed": 0,
        }

    # ---- connections ------------------------------------------------------------------
    def connect(self) -> None:
        """Create clients and warehouse tables once; position the consumer at its commit."""
        if self._consumer is not None:
            return
        s = self.settings
        # Qualified names everywhere: the target database may not exist before this call.
        self._ch = self._ch or self.stack.clickhouse(database="default")
        ensure_progress_table(self._ch, s.clickhouse_database)
        ensure_dead_letter_table(self._ch, s.clickhouse_database)
        self._producer = self._producer or self.stack.kafka_producer()
        self._admin = self._admin or KafkaAdminClient(
            bootstrap_servers=s.kafka_bootstrap, request_timeout_ms=5000
        )
        self._cluster_id = cluster_id(self._admin)
        consumer = self.stack.kafka_consumer(group_id=self.group, max_poll_records=self.batch_size)
        consumer.assign([self._partition])  # one partition: no group rebalancing to wait for
        committed = consumer.committed(self._partition)
        if committed is None:
            consumer.seek_to_beginning(self._partition)
        else:
            consumer.seek(self._partition, committed)
        self._consumer = consumer

    def _reset_consumer(self) -> None:
        if self._consumer is not None:
            try:
                self._consumer.close(autocommit=False)
            except Exception:  # noqa: BLE001 - a broken consumer may fail to close; drop it
                pass
        self._consumer = None

    def _same_broker(self) -> bool:
        """False if the broker restarted (new cluster id) since our consumer was created.

        Asked before every poll and every commit: an old consumer on a restarted broker keeps
        its old offset N, reads the new topic from N and may commit there, which would make
        offsets 0..N-1 of the new topic be skipped for good (FIELD_NOTES).
        """
        if cluster_id(self._admin) == self._cluster_id:
            return True
        log.warning("the broker restarted: reading the new topic from the beginning")
        self._count("restarts_seen", 1)
        self._reset_consumer()
        if self._producer is not None:
            self._producer.close()
        self._producer = None
        return False

    def ensure_table(self, table: str) -> None:
        """Create the ClickHouse table of a registered source table (once per router)."""
        if table in self._created_tables:
            return
        model = self.registry[table]
        self._ch.command(olap.create_table_sql(model, database=self.settings.clickhouse_database))
        self._created_tables.add(table)

    # ---- one batch --------------------------------------------------------------------
    def step(self, timeout_ms: int | None = None) -> BatchResult:
        """Poll one batch, route it, write it, then commit offsets and record progress."""
        self.connect()
        if not self._same_broker():
            self.connect()  # a fresh consumer at the start of the new topic
        polled = self._consumer.poll(
            timeout_ms=self.poll_timeout_ms if timeout_ms is None else timeout_ms,
            max_records=self.batch_size,
        )
        records = [record for batch in polled.values() for record in batch]
        if not records:
            return BatchResult()
        try:
            result, dead = self._route_records(records)
            self._park(dead)
        except Exception:
            # Nothing of this batch is committed: go back and try it again next time.
            self._consumer.seek(self._partition, records[0].offset)
            raise
        if not self._same_broker():
            # Written rows are valid changes (ClickHouse keeps the newest); but positions on a
            # restarted broker mean nothing: commit nothing, record no progress, start over.
            return BatchResult(consumed=0)
        next_offset = records[-1].offset + 1
        self._consumer.commit({self._partition: OffsetAndMetadata(next_offset, "", -1)})
        if result.progress_lsn and result.progress_lsn > self._progress_lsn:
            write_progress(
                self._ch, self.settings.clickhouse_database, self.group, result.progress_lsn
            )
            self._progress_lsn = result.progress_lsn
        self._record(result)
        return result

    def _route_records(self, records: list[Any]) -> tuple[BatchResult, list[DeadLetter]]:
        """Route and write records; returns the result and the dead letters (not yet parked)."""
        result = BatchResult(consumed=len(records))
        buffer = _TableBuffer()
        dead: list[DeadLetter] = []
        for record in records:
            try:
                event = parse_event(record.value)
                self._route_event(event, record, buffer)
            except EventParseError as exc:
                dead.append(make_dead_letter(record, "decode", str(exc)))
                event = None
            except RoutingError as exc:
                dead.append(make_dead_letter(record, exc.stage, str(exc)))
            if event is not None and event.metadata.end_lsn and event.metadata.last_in_txn:
                result.progress_lsn = max(
                    result.progress_lsn or 0, str_to_lsn(event.metadata.end_lsn)
                )
        self._flush(buffer)
        dead.extend(buffer.rejected)
        result.routed = sum(buffer.written.values())
        result.tables.update(buffer.written)
        result.dead_lettered = len(dead)
        return result, dead

    def _route_event(self, event: CdcEvent, record: Any, buffer: _TableBuffer) -> None:
        table = event.metadata.table
        model = self.registry.get(table)
        if model is None:
            raise RoutingError("lookup", f"no OLAP model registered for table {table!r}")
        self.ensure_table(table)
        if event.metadata.operation == "truncate":
            self._flush(buffer)  # the rows before the truncate must be in first
            self._truncate(table, model, str_to_lsn(event.metadata.lsn))
            buffer.written[table] += 1
            return
        payload = dict(event.payload)
        if event.metadata.unchanged_toast:
            payload = self._fill_unchanged_toast(table, model, payload, event, buffer)
        try:
            row = olap.to_row(model, event, payload)
        except olap.OlapValidationError as exc:
            raise RoutingError("validate", str(exc)) from exc
        key = tuple(row[column] for column in olap.order_by_of(model))
        buffer.add(_PendingRow(table, key, row, record))

    def _fill_unchanged_toast(
        self, table: str, model: type, payload: dict, event: CdcEvent, buffer: _TableBuffer
    ) -> dict:
        """Take unchanged TOAST values from the newest known version of the row."""
        keys = olap.order_by_of(model)
        key = tuple(payload.get(column) for column in keys)
        missing = list(event.metadata.unchanged_toast)
        current = buffer.latest.get((table, key)) or self._stored_row(table, keys, key, missing)
        if current is None or any(column not in current for column in missing):
            raise RoutingError(
                "enrich",
                f"unchanged TOAST column(s) {', '.join(missing)} of {table} {key}: no stored "
                "row to take them from (set REPLICA IDENTITY FULL, or replay once it exists)",
            )
        return {**payload, **{column: current[column] for column in missing}}

    def _stored_row(
        self, table: str, keys: list[str], key: tuple, columns: list[str]
    ) -> dict | None:
        """The current (FINAL) values of `columns` for one primary key, or None."""
        conditions = " AND ".join(
            f"toString({quote_identifier(k)}) = {{k{i}:String}}" for i, k in enumerate(keys)
        )
        select = ", ".join(quote_identifier(c) for c in columns)
        # Identifiers are quoted; key values are bound parameters.
        query = f"SELECT {select} FROM {self._qualified(table)} FINAL WHERE {conditions}"  # noqa: S608
        result = self._ch.query(query, parameters={f"k{i}": str(v) for i, v in enumerate(key)})
        if not result.result_rows:
            return None
        return dict(zip(columns, result.result_rows[0], strict=True))

    def _truncate(self, table: str, model: type, lsn: int) -> None:
        """TRUNCATE at the source: mark every live row deleted, at the truncate's LSN."""
        keys = ", ".join(quote_identifier(k) for k in olap.order_by_of(model))
        self._ch.command(
            f"INSERT INTO {self._qualified(table)} ({keys}, `is_deleted`, `lsn`) "  # noqa: S608
            f"SELECT {keys}, 1, {{lsn:UInt64}} FROM {self._qualified(table)} FINAL",
            parameters={"lsn": lsn},
        )

    def _qualified(self, table: str) -> str:
        return f"{quote_identifier(self.settings.clickhouse_database)}.{quote_identifier(table)}"

    def _flush(self, buffer: _TableBuffer) -> None:
        """Insert each table's rows with one INSERT; isolate rows ClickHouse rejects."""
        for table, rows in buffer.rows.items():
            try:
                self._insert(table, [pending.row for pending in rows])
                buffer.written[table] += len(rows)
            except DatabaseError as exc:
                if isinstance(exc, OperationalError):
                    raise  # the warehouse is unreachable: retry the batch, dead-letter nothing
                ok, bad = self._insert_one_by_one(table, rows)
                buffer.written[table] += ok
                buffer.rejected.extend(bad)
        buffer.rows.clear()
        buffer.latest.clear()

    def _insert_one_by_one(
        self, table: str, rows: list[_PendingRow]
    ) -> tuple[int, list[DeadLetter]]:
        ok = 0
        bad: list[DeadLetter] = []
        for pending in rows:
            try:
                self._insert(table, [pending.row])
                ok += 1
            except DatabaseError as exc:
                if isinstance(exc, OperationalError):
                    raise
                reason = f"ClickHouse rejected the {table} row: {first_line(exc)}"
                if exc.__cause__ is not None:
                    reason += f" ({first_line(exc.__cause__)})"
                bad.append(make_dead_letter(pending.record, "warehouse", reason))
        return ok, bad

    def _insert(self, table: str, rows: list[dict[str, Any]]) -> None:
        columns = list(rows[0])
        self._ch.insert(
            table,
            [[row[column] for column in columns] for row in rows],
            column_names=columns,
            database=self.settings.clickhouse_database,
        )

    def _park(self, letters: list[DeadLetter]) -> None:
        """Dead letters go to the warehouse table (durable) and the dead-letter topic."""
        if not letters:
            return
        self._ch.insert(
            DEAD_LETTER_TABLE,
            dead_letter_rows(letters),
            column_names=DEAD_LETTER_COLUMNS,
            database=self.settings.clickhouse_database,
        )
        for letter in letters:
            self._producer.send(self.settings.dlq_topic, key=letter.key, value=letter.to_message())
            log.warning(
                "dead letter at offset %d (%s): %s", letter.offset, letter.stage, letter.error
            )
        self._producer.flush()

    # ---- dead letters ------------------------------------------------------------------
    def dead_letters(self, include_replayed: bool = False) -> list[dict[str, Any]]:
        """The parked events (newest state of each), as dicts for display."""
        self.connect()
        where = "" if include_replayed else " WHERE `replayed` = 0"
        table = self._qualified(DEAD_LETTER_TABLE)
        result = self._ch.query(f"SELECT * FROM {table} FINAL{where} ORDER BY `offset`")  # noqa: S608
        return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]

    def replay_dead_letters(self) -> BatchResult:
        """Route the parked events again, e.g. after registering a model or fixing data.

        Those that now route are marked replayed; those that fail again stay parked with the
        new reason. A replayed change cannot overwrite newer data: ClickHouse keeps the row
        with the highest LSN, and a replay keeps the event's original LSN.
        """
        letters = self.dead_letters()
        if not letters:
            return BatchResult()
        records = [_ParkedRecord.from_row(row) for row in letters]
        result, still_dead = self._route_records(records)
        failed_ids = {letter.id for letter in still_dead}
        replayed = [
            replace(parked.as_dead_letter(), failed_at=datetime.now(UTC))
            for parked in records
            if parked.id not in failed_ids
        ]
        self._ch.insert(
            DEAD_LETTER_TABLE,
            dead_letter_rows(replayed, replayed=1),
            column_names=DEAD_LETTER_COLUMNS,
            database=self.settings.clickhouse_database,
        )
        self._park(still_dead)
        self._count("replayed", len(replayed))
        return result

    # ---- background thread -----------------------------------------------------------
    def start(self) -> Router:
        """Route in a background thread (e.g. inside a notebook kernel) until `stop()`."""
        if self._thread is not None and self._thread.is_alive():
            return self
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="cdc-kit-router", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _loop(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            try:
                self.step()
                backoff = 0.5
            except Exception as exc:  # noqa: BLE001 - the loop must survive any failure
                self._set("last_error", one_line(exc))
                log.error("router batch failed (%s); retrying in %.1f s", first_line(exc), backoff)
                self._reset_consumer()
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)

    # ---- statistics -------------------------------------------------------------------
    def _record(self, result: BatchResult) -> None:
        with self._lock:
            self._stats["consumed"] += result.consumed
            self._stats["routed"] += result.routed
            self._stats["dead_lettered"] += result.dead_lettered
            self._stats["batches"] += 1
            self._stats["by_table"].update(result.tables)
            self._stats["last_batch_at"] = time.time()

    def _count(self, name: str, amount: int) -> None:
        with self._lock:
            self._stats[name] += amount

    def _set(self, name: str, value: Any) -> None:
        with self._lock:
            self._stats[name] = value

    def stats(self) -> dict[str, Any]:
        """A snapshot of the counters (safe to call from another thread, e.g. a widget)."""
        with self._lock:
            stats = {k: (dict(v) if isinstance(v, Counter) else v) for k, v in self._stats.items()}
        stats["running"] = self.running
        stats["progress_lsn"] = self._progress_lsn
        return stats

    def close(self) -> None:
        self.stop()
        self._reset_consumer()
        for client in (self._producer, self._admin):
            if client is not None:
                client.close()
        self._producer = self._admin = None


@dataclass
class _ParkedRecord:
    """A dead letter read back from the warehouse, shaped like a Kafka record for routing."""

    id: str
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    stage: str
    error: str

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> _ParkedRecord:
        return cls(
            id=row["id"],
            topic=row["topic"],
            partition=row["partition"],
            offset=row["offset"],
            key=row["key"].encode() if row["key"] else None,
            value=base64.b64decode(row["value"]),
            stage=row["stage"],
            error=row["error"],
        )

    def as_dead_letter(self) -> DeadLetter:
        return DeadLetter(
            self.stage,
            self.error,
            self.topic,
            self.partition,
            self.offset,
            self.key,
            self.value,
            datetime.now(UTC),
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cdc_kit route", description=__doc__)
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    logging.getLogger("kafka").setLevel(logging.ERROR)
    router = Router(batch_size=args.batch_size)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    router.start()
    while not stopping.wait(5.0):
        log.info("router: %s", {k: v for k, v in router.stats().items() if k != "by_table"})
    router.close()
    return 0
