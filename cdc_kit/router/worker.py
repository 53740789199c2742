"""The Router: reads the change topic, lets `routing.route` decide, writes ClickHouse, commits.

    topic --consume--> route() (pure) --> INSERT per table --> dead letters parked
                                                                    |
          commit offsets <-- record progress (end LSN) <------------+

Rules that make it safe to lift into production:
- no `if table == ...`: the registry maps a table name to its OLAP model; registering a model
  is the only step to route a new table;
- a bad event never stops the router: it becomes a dead letter with its reason and stage, so
  `consumed + replayed == routed + dead_lettered` always holds;
- offsets are committed only after the batch is in ClickHouse (at-least-once); replays are
  harmless because ReplacingMergeTree keeps the highest LSN per primary key;
- after each batch the router records the end LSN of the last transaction it fully wrote,
  which capture needs before it lets PostgreSQL forget those changes;
- one router per consumer group at a time, and one batch at a time per router: calls from a
  notebook (`step`, `dead_letters`, `replay_dead_letters`) wait for the running batch;
- a router holds its group only while it works (a `step`, a `catch_up`, or routing in the
  background), each time from the committed offset; a background router hands the group to a
  router that asks for it, between two batches (`lease`).
"""

from __future__ import annotations

import argparse
import base64
import logging
import signal
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError
from confluent_kafka import OFFSET_BEGINNING, KafkaException, TopicPartition

from cdc_kit import clients, olap, replication, warehouse
from cdc_kit.config import Settings, get_settings
from cdc_kit.errors import CdcKitError, first_line, one_line
from cdc_kit.lsn import lsn_to_str
from cdc_kit.progress import ensure_progress_table, write_progress
from cdc_kit.router.dead_letters import (
    DeadLetter,
    dead_letter_table,
    ensure_dead_letter_table,
    write_dead_letters,
)
from cdc_kit.router.lease import GroupLease
from cdc_kit.router.routing import Record, RoutedBatch, TableRows, Truncate, dead_letter, route

log = logging.getLogger("cdc_kit.router")

#: While batches keep coming, the progress table is written at most this often.
PROGRESS_EVERY_S = 0.2


@dataclass
class BatchResult:
    """What one `step()` (or several, added up) did."""

    consumed: int = 0
    routed: int = 0
    dead_lettered: int = 0
    tables: Counter = field(default_factory=Counter)
    dead_by_stage: Counter = field(default_factory=Counter)
    progress_lsn: int | None = None

    def __add__(self, other: BatchResult) -> BatchResult:
        return BatchResult(
            self.consumed + other.consumed,
            self.routed + other.routed,
            self.dead_lettered + other.dead_lettered,
            self.tables + other.tables,
            self.dead_by_stage + other.dead_by_stage,
            max(self.progress_lsn or 0, other.progress_lsn or 0) or None,
        )

    def __str__(self) -> str:
        tables = ", ".join(f"{t}: {n}" for t, n in sorted(self.tables.items())) or "none"
        text = f"consumed {self.consumed}, routed {self.routed} ({tables})"
        if self.dead_lettered:
            stages = ", ".join(f"{s}: {n}" for s, n in sorted(self.dead_by_stage.items()))
            text += f", dead-lettered {self.dead_lettered} ({stages})"
        return text


class Router:
    """Routes the change topic into ClickHouse. Use `step()`, `catch_up()`, `start()`/`stop()`,
    `stats()`; `close()` when done (a notebook's last cell), so another router may take over."""

    def __init__(
        self,
        stack: Any = None,
        settings: Settings | None = None,
        registry: dict[str, type] | None = None,
        group: str | None = None,
        batch_size: int = 5000,
        poll_timeout_ms: int = 200,
        insert_settings: dict[str, Any] | None = None,
        hands_over: bool = True,
    ) -> None:
        """`stack` (or `settings`) says where the services are.

        `registry`: table -> OLAP model (default: the shared `olap.OLAP_MODELS`).
        `insert_settings`: ClickHouse settings for every INSERT, e.g. `{"optimize_on_insert": 0}`
        to keep versions of one key that arrive in the same batch (lesson 07).
        `hands_over`: while routing in the background, give the group to another router that
        asks for it (a notebook's router does; the `route` service keeps its group).
        """
        self.settings: Settings = settings or (stack.settings if stack else get_settings())
        self.registry = registry if registry is not None else olap.OLAP_MODELS
        self.group = group or self.settings.router_group
        self.batch_size = batch_size
        self.poll_timeout_ms = poll_timeout_ms
        self.insert_settings = dict(insert_settings or {})
        self._database = self.settings.clickhouse_database
        self._topic = self.settings.cdc_topic
        self._lease = GroupLease(self.settings.home, self.group, hands_over=hands_over)
        self._consumer: Any = None
        self._producer: Any = None
        self._admin: Any = None
        self._cluster_id: str | None = None
        self._ch: Any = None
        self._synced: dict[str, type] = {}  # table -> the model its columns were synced for
        self._type_differs: dict[str, dict[str, tuple[str, str]]] = {}  # table -> column drift
        self._progress_lsn = 0  # written to ClickHouse (in memory at once)
        self._progress_saved = 0  # ... and recorded in the progress table for capture
        self._progress_saved_at = 0.0
        self._thread: threading.Thread | None = None
        self._background = False  # routing in its thread: the group stays held between batches
        self._stop = threading.Event()
        self._batch_lock = threading.RLock()  # one batch at a time, whoever asks
        self._stats_lock = threading.Lock()
        self._rate: deque[tuple[float, int]] = deque(maxlen=64)
        self._stats: dict[str, Any] = {
            "consumed": 0,
            "routed": 0,
            "dead_lettered": 0,
            "replayed": 0,
            "batches": 0,
            "by_table": Counter(),
            "dead_by_stage": Counter(),
            "last_error": "",
            "last_batch_at": None,
            "restarts_seen": 0,
            "lag": None,
            "handed_over_to": None,
        }

    # ---- connections --------------------------------------------------------------------
    def connect(self) -> None:
        """Create the clients and the tables (the group is taken only while the router works)."""
        if self._ch is None:
            # clickhouse-connect imports pandas at its first INSERT (~0.5 s): here, rather than
            # in the first change a learner waits for.
            import pandas  # noqa: F401

            # Qualified names everywhere: the target database may not exist before this call
            # (ensure_progress_table creates it).
            self._ch = clients.clickhouse(self.settings, database="default")
            ensure_progress_table(self._ch, self._database)
            ensure_dead_letter_table(self._ch, self._database)
            for table, model in list(self.registry.items()):
                try:
                    self._sync(table, model)
                except DatabaseError as exc:
                    if isinstance(exc, OperationalError):
                        raise
                    # Its events will be dead-lettered with this reason; the others flow.
                    log.error("ClickHouse refused table %s: %s", table, first_line(exc))
            warehouse.create_views(self._ch, self._database, self.registry)
        if self._producer is None:
            self._producer = clients.rdkafka_producer(self.settings, **{"client.id": "cdc-kit-dlq"})
        if self._admin is None:
            self._admin = clients.kafka_admin(self.settings)

    @contextmanager
    def _holding_group(self) -> Iterator[None]:
        """Hold the consumer group for one piece of work (nested calls share it).

        Taking the group places a fresh consumer at the group's committed offset: another
        router may have routed in between. Unless this router routes in the background, the
        group is given back afterwards, so an idle notebook never blocks another one.
        """
        with self._batch_lock:
            taken = not self._lease.held
            if taken:
                self.connect()
                self._lease.acquire()
            try:
                if self._consumer is None:
                    self._open_consumer()
                yield
            finally:
                if taken and not self._background:
                    self._give_back_group()

    def _open_consumer(self) -> None:
        """A consumer of the change topic at the group's committed offset."""
        cluster = clients.cluster_id(self._admin)
        consumer = clients.rdkafka_consumer(self.settings, self.group)
        try:
            topic = consumer.list_topics(self._topic, timeout=10).topics.get(self._topic)
            if topic is None or topic.error is not None:
                raise CdcKitError(f"topic {self._topic!r} does not exist (yet); it is made at `up`")
            committed = consumer.committed([TopicPartition(self._topic, 0)], timeout=10)[0]
            start = committed.offset if committed.offset >= 0 else OFFSET_BEGINNING
            consumer.assign([TopicPartition(self._topic, 0, start)])
        except BaseException:
            consumer.close()
            raise
        self._cluster_id = cluster
        self._consumer = consumer

    def _give_back_group(self) -> None:
        """Record progress, drop the consumer (its position goes stale) and the lease."""
        try:
            if self._ch is not None:
                self._save_progress()
        except DatabaseError as exc:  # ClickHouse gone: capture re-sends, nothing lost
            log.warning("could not record progress: %s", first_line(exc))
        finally:
            self._reset_consumer()
            self._lease.release()

    def _reset_consumer(self) -> None:
        if self._consumer is not None:
            try:
                self._consumer.close()
            except (KafkaException, RuntimeError):  # a broken consumer may fail to close
                pass
        self._consumer = None

    def _same_broker(self) -> bool:
        """False if the broker restarted (new cluster id) since our consumer was created.

        Asked before every poll and every commit: an old consumer on a restarted broker keeps
        its old offset N, reads the new topic from N and may commit there, which would make
        offsets 0..N-1 of the new topic be skipped for good. (kafka-python's DescribeCluster
        answers in ~0.5 ms here; librdkafka's metadata request took ~20 ms.)
        """
        if clients.cluster_id(self._admin) == self._cluster_id:
            return True
        log.warning("the broker restarted: reading the new topic from the beginning")
        self._count("restarts_seen", 1)
        self._reset_consumer()
        return False

    def register(self, model: type[olap.CdcOlapModelBase]) -> type[olap.CdcOlapModelBase]:
        """Route `model.__table__` from now on; with a connected router its table is made now."""
        with self._batch_lock:
            olap.register(model, self.registry)
            if self._ch is not None:
                self._sync(model.__table__, model)
        return model

    def _sync(self, table: str, model: type) -> warehouse.SchemaChange:
        """Create the table or add the columns the model gained (once per model class)."""
        change = warehouse.sync_table(self._ch, model, self._database)
        self._synced[table] = model
        self._type_differs[table] = change.type_differs
        if change.created or change.added or change.type_differs:
            log.info("ClickHouse schema: %s", change)
        return change

    def _type_mismatch(self, write: TableRows) -> str | None:
        """Why rows of a table whose column types differ from the model cannot be written.

        ClickHouse would convert them silently (a 5-digit cost fits a Decimal(6, 2) column's
        storage): the kit never changes a type itself, so the rows wait for a person's ALTER.
        Asked again each batch, so they flow again as soon as the column was changed.
        """
        if self._type_differs.get(write.table):
            self._sync(write.table, write.model)
        differs = self._type_differs.get(write.table)
        if not differs:
            return None
        column, (have, want) = next(iter(differs.items()))
        table = olap.table_name(write.model, self._database)
        return (
            f"column {column} is {have} in ClickHouse but {want} in {write.model.__name__}: "
            f"the kit never changes a column's type; run ALTER TABLE {table} MODIFY COLUMN "
            f"`{column}` {want}, then router.replay_dead_letters()"
        )

    # ---- one batch ----------------------------------------------------------------------
    def step(self, timeout_ms: int | None = None) -> BatchResult:
        """Poll one batch, route it, write it, then commit offsets and record progress."""
        with self._holding_group():
            return self._step(self.poll_timeout_ms if timeout_ms is None else timeout_ms)

    def _step(self, timeout_ms: int) -> BatchResult:
        if not self._same_broker():
            self._open_consumer()  # a fresh consumer at the start of the new topic
        records = self._poll(timeout_ms)
        if not records:
            self._save_progress()  # idle: a good moment to tell capture how far we are
            self._set_lag()
            return BatchResult()
        try:
            batch = route(records, self.registry, self._stored_values)
            result = self._write(batch)
            self._park(batch.dead)
        except Exception:
            # Nothing of this batch is committed: go back and try it again next time.
            try:
                self._consumer.seek(TopicPartition(self._topic, 0, records[0].offset))
            except KafkaException:
                self._reset_consumer()  # a fresh consumer starts at the committed offset
            raise
        if not self._same_broker():
            # Written rows are valid changes (ClickHouse keeps the newest); but positions on a
            # restarted broker mean nothing: commit nothing, record no progress, start over.
            return BatchResult()
        next_offset = records[-1].offset + 1
        self._consumer.commit(
            offsets=[TopicPartition(self._topic, 0, next_offset)], asynchronous=False
        )
        if batch.progress_lsn and batch.progress_lsn > self._progress_lsn:
            self._progress_lsn = batch.progress_lsn
            if time.monotonic() - self._progress_saved_at > PROGRESS_EVERY_S:
                self._save_progress()
        self._record(result)
        self._set_lag(next_offset)
        return result

    def _save_progress(self) -> None:
        """Record in ClickHouse how far the router has written (capture reads it).

        Written at most every PROGRESS_EVERY_S while busy, and whenever the topic is drained:
        a later record only delays when PostgreSQL may free WAL, never loses a change.
        """
        if self._progress_lsn > self._progress_saved:
            write_progress(self._ch, self._database, self.group, self._progress_lsn)
            self._progress_saved = self._progress_lsn
            self._progress_saved_at = time.monotonic()

    def _poll(self, timeout_ms: int) -> list[Record]:
        """Wait up to `timeout_ms` for the first message, then take what is already fetched."""
        first = self._consumer.poll(timeout_ms / 1000)
        if first is None:
            return []
        messages = [first, *self._consumer.consume(self.batch_size - 1, timeout=0)]
        records = []
        for message in messages:
            error = message.error()
            if error is not None:
                raise KafkaException(error)
            records.append(
                Record(
                    message.topic(),
                    message.partition(),
                    message.offset(),
                    message.key(),
                    message.value(),
                )
            )
        return records

    def _stored_values(self, table: str, model: type, key: tuple, columns: list[str]) -> Any:
        return warehouse.stored_values(self._ch, self._database, model, key, columns)

    def _write(self, batch: RoutedBatch) -> BatchResult:
        """Execute the batch's writes in order; rows ClickHouse refuses become dead letters."""
        result = BatchResult(consumed=batch.consumed, progress_lsn=batch.progress_lsn)
        for write in batch.writes:
            if self._synced.get(write.table) is not write.model:
                try:
                    self._sync(write.table, write.model)
                except DatabaseError as exc:
                    if isinstance(exc, OperationalError):
                        raise  # ClickHouse is unreachable: retry the batch, park nothing
                    reason = f"ClickHouse refused to create table {write.table}: {first_line(exc)}"
                    sources = write.records if isinstance(write, TableRows) else [write.record]
                    batch.dead.extend(dead_letter(r, "warehouse", reason) for r in sources)
                    continue
            if isinstance(write, Truncate):
                warehouse.insert_delete_markers(self._ch, self._database, write.model, write.lsn)
                result.tables[write.table] += 1
            elif reason := self._type_mismatch(write):
                batch.dead.extend(dead_letter(r, "warehouse", reason) for r in write.records)
            else:
                written = self._insert_rows(write, batch.dead)
                if written:
                    result.tables[write.table] += written
        result.routed = sum(result.tables.values())
        result.dead_lettered = len(batch.dead)
        result.dead_by_stage.update(letter.stage for letter in batch.dead)
        return result

    def _insert_rows(self, write: TableRows, dead: list[DeadLetter]) -> int:
        """One INSERT for the group; if ClickHouse refuses it, row by row to find the bad ones."""
        try:
            self._insert(write.model, write.rows)
            return len(write.rows)
        except DatabaseError as exc:
            if isinstance(exc, OperationalError):
                raise
        written = 0
        for row, record in zip(write.rows, write.records, strict=True):
            try:
                self._insert(write.model, [row])
                written += 1
            except DatabaseError as exc:
                if isinstance(exc, OperationalError):
                    raise
                reason = f"ClickHouse rejected the {write.table} row: {first_line(exc)}"
                if exc.__cause__ is not None:
                    reason += f" ({first_line(exc.__cause__)})"
                dead.append(dead_letter(record, "warehouse", reason))
        return written

    def _insert(self, model: type, rows: list[list[Any]]) -> None:
        types = olap.layout(model).types
        self._ch.insert(
            model.__table__,
            rows,
            column_names=list(types),
            column_type_names=list(types.values()),
            database=self._database,
            settings=self.insert_settings or None,
        )

    def _park(self, letters: list[DeadLetter]) -> None:
        """Dead letters go to the warehouse table (durable) and the dead-letter topic."""
        if not letters:
            return
        write_dead_letters(self._ch, self._database, letters, self.group)
        for letter in letters:
            self._producer.produce(
                self.settings.dlq_topic, key=letter.key, value=letter.to_message()
            )
        stages = Counter(letter.stage for letter in letters)
        log.warning(
            "%d dead letter(s) parked (%s), e.g. offset %d: %s; see router.dead_letters()",
            len(letters),
            ", ".join(f"{stage}: {n}" for stage, n in sorted(stages.items())),
            letters[0].offset,
            letters[0].error[:200],
        )
        undelivered = self._producer.flush(30)
        if undelivered:
            raise CdcKitError(f"{undelivered} dead letters not delivered to the dead-letter topic")

    # ---- catching up --------------------------------------------------------------------
    def catch_up(self, timeout: float = 30.0) -> BatchResult:
        """Route until every change committed in PostgreSQL so far is in ClickHouse.

        "So far" is PostgreSQL's WAL position when the call starts. Done when the router has
        written up to it, or capture has confirmed it (nothing of ours was pending there).
        """
        conn = clients.pg_connection(self.settings)  # one connection for the whole wait
        conn.autocommit = True
        try:
            with self._holding_group():
                return self._catch_up(conn, timeout)
        finally:
            conn.close()

    def _catch_up(self, conn: Any, timeout: float) -> BatchResult:
        target = replication.current_wal_lsn(conn)
        total = BatchResult()
        deadline = time.monotonic() + timeout
        while True:
            result = self.step(timeout_ms=50)
            total += result
            if result.consumed == 0 and self._reached(conn, target):
                return total
            if time.monotonic() > deadline:
                raise CdcKitError(
                    f"not caught up with PostgreSQL ({lsn_to_str(target)}) after "
                    f"{timeout:.0f} s: is capture running (`python -m cdc_kit status`)? "
                    f"routed so far: {total}"
                )

    def _reached(self, conn: Any, target: int) -> bool:
        if self._progress_lsn >= target:
            return True
        confirmed = replication.confirmed_lsn(conn, self.settings.slot_name)
        return confirmed is not None and confirmed >= target

    # ---- dead letters -------------------------------------------------------------------
    def dead_letters(self, include_replayed: bool = False) -> list[dict[str, Any]]:
        """This router group's parked events (newest state of each), as dicts for display."""
        with self._batch_lock:
            self.connect()  # reading needs no group
            waiting = "" if include_replayed else " AND `replayed` = 0"
            table = dead_letter_table(self._database)
            query = (
                f"SELECT * FROM {table} FINAL WHERE `group` = {{group:String}}{waiting} "  # noqa: S608
                "ORDER BY `offset`"
            )
            result = self._ch.query(query, parameters={"group": self.group})
            return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]

    def replay_dead_letters(self) -> BatchResult:
        """Route the parked events again, e.g. after registering a model or fixing data.

        Those that now route are marked replayed; those that fail again stay parked with the
        new reason. A replayed change cannot overwrite newer data: ClickHouse keeps the row
        with the highest LSN, and a replay keeps the event's original LSN.
        """
        with self._holding_group():
            parked = self.dead_letters()
            if not parked:
                return BatchResult()
            records = [_record_of(row) for row in parked]
            batch = route(records, self.registry, self._stored_values)
            result = self._write(batch)
            failed = {letter.id for letter in batch.dead}
            replayed = [
                dead_letter(record, row["stage"], row["error"])
                for record, row in zip(records, parked, strict=True)
                if row["id"] not in failed
            ]
            write_dead_letters(self._ch, self._database, replayed, self.group, replayed=1)
            self._park(batch.dead)
            with self._stats_lock:
                self._stats["replayed"] += len(replayed)
                self._stats["routed"] += result.routed
                self._stats["by_table"].update(result.tables)
            return result

    # ---- background thread --------------------------------------------------------------
    def start(self) -> Router:
        """Route in a background thread (e.g. inside a notebook kernel) until `stop()`.

        The group is taken here, in the caller's cell: a background router elsewhere is asked
        to hand it over; one that keeps it, or does not answer, is named in a one-line error.
        """
        if self.running:
            return self
        with self._batch_lock:
            self.connect()
            self._lease.acquire()
            self._background = True
        self._set("handed_over_to", None)
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="cdc-kit-router", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the background thread after its current batch (and give the group back)."""
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():  # a later start() would run a second loop beside it
                raise CdcKitError(
                    f"the router's thread did not stop within {timeout:.0f} s (a batch is still "
                    "running: ClickHouse or Kafka slow to answer?); call stop() again"
                )
        self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _loop(self) -> None:
        backoff = 0.5
        try:
            while not self._stop.is_set():
                asker = self._lease.handover_requested() if self._lease.hands_over else None
                if asker is not None:
                    self._hand_over(asker)
                    return
                try:
                    self.step()
                    backoff = 0.5
                except Exception as exc:  # noqa: BLE001 - the loop must survive any failure
                    self._set("last_error", one_line(exc))
                    log.error(
                        "router batch failed (%s); retrying in %.1f s", first_line(exc), backoff
                    )
                    with self._batch_lock:
                        self._reset_consumer()
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, 5.0)
        finally:
            with self._batch_lock:
                self._background = False
                self._give_back_group()

    def _hand_over(self, asker: dict[str, Any]) -> None:
        """Another router asked for the group: stop here (the loop's end gives it back)."""
        who = f"pid {asker['pid']} ({asker['name']}) at {time.strftime('%H:%M:%S')}"
        self._set("handed_over_to", who)
        log.warning(
            "router group %r handed over to %s; router.start() takes it back", self.group, who
        )

    # ---- statistics ---------------------------------------------------------------------
    def _record(self, result: BatchResult) -> None:
        with self._stats_lock:
            self._stats["consumed"] += result.consumed
            self._stats["routed"] += result.routed
            self._stats["dead_lettered"] += result.dead_lettered
            self._stats["batches"] += 1
            self._stats["by_table"].update(result.tables)
            self._stats["dead_by_stage"].update(result.dead_by_stage)
            self._stats["last_batch_at"] = time.time()
            self._rate.append((time.monotonic(), self._stats["consumed"]))

    def _set_lag(self, position: int | None = None) -> None:
        """Messages on the topic the router has not read yet (from the last fetch's watermark)."""
        try:
            _, high = self._consumer.get_watermark_offsets(
                TopicPartition(self._topic, 0), cached=True
            )
            if position is None:
                position = self._consumer.position([TopicPartition(self._topic, 0)])[0].offset
        except KafkaException:
            return
        if high >= 0 and position is not None and position >= 0:
            self._set("lag", max(0, high - position))

    def _count(self, name: str, amount: int) -> None:
        with self._stats_lock:
            self._stats[name] += amount

    def _set(self, name: str, value: Any) -> None:
        with self._stats_lock:
            self._stats[name] = value

    def stats(self) -> dict[str, Any]:
        """A snapshot of the counters (safe to call from another thread, e.g. a widget).

        `events_per_s` is the consumption rate over the last few seconds.
        """
        now = time.monotonic()
        with self._stats_lock:
            stats = {k: (dict(v) if isinstance(v, Counter) else v) for k, v in self._stats.items()}
            recent = [(t, n) for t, n in self._rate if now - t <= 5.0]
        if len(recent) >= 2 and recent[-1][0] > recent[0][0]:
            stats["events_per_s"] = (recent[-1][1] - recent[0][1]) / (recent[-1][0] - recent[0][0])
        else:
            stats["events_per_s"] = 0.0
        stats["running"] = self.running
        stats["progress_lsn"] = self._progress_lsn
        return stats

    def close(self) -> None:
        """Stop, close the clients and give up the group's lease (another router may start)."""
        self.stop()
        with self._batch_lock:
            self._give_back_group()
            if self._producer is not None:
                self._producer.flush(10)
            if self._admin is not None:
                self._admin.close()
            self._producer = self._admin = None

    def __enter__(self) -> Router:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _record_of(row: dict[str, Any]) -> Record:
    """A parked dead letter read back from the warehouse, as the record it came from."""
    return Record(
        row["topic"],
        row["partition"],
        row["offset"],
        row["key"].encode() if row["key"] else None,
        base64.b64decode(row["value"]),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cdc_kit route", description=__doc__)
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    router = Router(batch_size=args.batch_size, hands_over=False)  # a service keeps its group
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    router.start()
    while not stopping.wait(5.0):
        log.info("router: %s", {k: v for k, v in router.stats().items() if k != "by_table"})
    router.close()
    return 0
