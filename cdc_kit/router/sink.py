"""Where routed rows go: the warehouse tables, the dead letters, and the router's progress.

A `Sink` must tolerate duplicate writes: delivery is at least once, so after a crash or a
replay the same changes arrive again. ClickHouse's ReplacingMergeTree(lsn, is_deleted) keeps
one version per key and LSN, so writing a row twice changes nothing a correct query sees.

`ClickHouseSink` writes ClickHouse (and the dead-letter topic); `MemorySink` is its twin in
memory, so the router's rules are tested without services (tests/unit).
"""

from __future__ import annotations

import base64
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Protocol

from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

from cdc_kit import clients, olap, warehouse
from cdc_kit.config import Settings
from cdc_kit.errors import FixableError, first_line
from cdc_kit.progress import ensure_progress_table, write_progress
from cdc_kit.router.dead_letters import (
    DeadLetter,
    dead_letter_table,
    ensure_dead_letter_table,
    write_dead_letters,
)
from cdc_kit.router.routing import Record, RoutedBatch, TableRows, Truncate, dead_letter
from cdc_kit.router.stats import BatchResult

log = logging.getLogger("cdc_kit.router")


class Sink(Protocol):
    """Rows, dead letters and progress, written at least once (duplicates must be harmless)."""

    @property
    def ready(self) -> bool:
        """True once `prepare` made what the tables need."""
        ...

    def prepare(self, registry: dict[str, type[olap.CdcOlapModelBase]]) -> None:
        """Make what the registered tables need (tables, views, the dead-letter table)."""

    def sync(self, table: str, model: type[olap.CdcOlapModelBase]) -> None:
        """Create `model`'s table, or add the columns it gained (a model registered late)."""

    def write(self, batch: RoutedBatch) -> BatchResult:
        """Write the batch's rows in order; rows the warehouse refuses join `batch.dead`.
        Raises if the warehouse cannot be reached: then nothing may be committed."""
        ...

    def park(self, letters: list[DeadLetter], group: str) -> None:
        """Keep `letters` where a broker restart cannot erase them, with their reasons."""

    def mark_replayed(self, letters: list[DeadLetter], group: str) -> None: ...

    def dead_letters(self, group: str, include_replayed: bool = False) -> list[dict[str, Any]]:
        """The group's parked events (newest state of each), as dicts, in topic order."""
        ...

    def record_progress(self, group: str, end_lsn: int) -> None:
        """Every transaction ending at or before `end_lsn` is written (capture reads it)."""

    def stored_values(
        self, table: str, model: type, key: tuple, columns: list[str]
    ) -> dict[str, Any] | None:
        """The current values of `columns` of one row, or None (unchanged TOAST values)."""
        ...

    def close(self) -> None: ...


def record_of(letter: dict[str, Any]) -> Record:
    """A parked dead letter, as `dead_letters()` shows it, back into the record it came from."""
    return Record(
        letter["topic"],
        letter["partition"],
        letter["offset"],
        letter["key"].encode() if letter["key"] else None,
        base64.b64decode(letter["value"]),
    )


class ClickHouseSink:
    """ClickHouse tables per OLAP model; dead letters in a table and on the dead-letter topic."""

    def __init__(self, settings: Settings, insert_settings: dict[str, Any] | None = None) -> None:
        """`insert_settings`: ClickHouse settings for every INSERT (e.g. optimize_on_insert)."""
        self.settings = settings
        self.database = settings.clickhouse_database
        self.insert_settings = dict(insert_settings or {})
        self._ch: Any = None
        self._producer: Any = None
        self._synced: dict[str, type] = {}  # table -> the model its columns were synced for
        self._type_differs: dict[str, dict[str, tuple[str, str]]] = {}  # table -> column drift

    @property
    def ready(self) -> bool:
        return self._ch is not None

    def prepare(self, registry: dict[str, type[olap.CdcOlapModelBase]]) -> None:
        if self._ch is None:
            # clickhouse-connect imports pandas at its first INSERT (~0.5 s): here, rather than
            # in the first change a learner waits for.
            import pandas  # noqa: F401

            # Qualified names everywhere: the target database may not exist before this call
            # (ensure_progress_table creates it).
            self._ch = clients.clickhouse(self.settings, database="default")
            ensure_progress_table(self._ch, self.database)
            ensure_dead_letter_table(self._ch, self.database)
            for table, model in list(registry.items()):
                try:
                    self.sync(table, model)
                except DatabaseError as exc:
                    if isinstance(exc, OperationalError):
                        raise
                    # Its events will be dead-lettered with this reason; the others flow.
                    log.error("ClickHouse refused table %s: %s", table, first_line(exc))
            warehouse.create_views(self._ch, self.database, registry)
        if self._producer is None:
            self._producer = clients.rdkafka_producer(self.settings, **{"client.id": "cdc-kit-dlq"})

    def sync(self, table: str, model: type[olap.CdcOlapModelBase]) -> None:
        change = warehouse.sync_table(self._ch, model, self.database)
        self._synced[table] = model
        self._type_differs[table] = change.type_differs
        if change.created or change.added or change.type_differs:
            log.info("ClickHouse schema: %s", change)

    def write(self, batch: RoutedBatch) -> BatchResult:
        result = BatchResult(consumed=batch.consumed, progress_lsn=batch.progress_lsn)
        for write in batch.writes:
            if self._synced.get(write.table) is not write.model:
                try:
                    self.sync(write.table, write.model)
                except DatabaseError as exc:
                    if isinstance(exc, OperationalError):
                        raise  # ClickHouse is unreachable: retry the batch, park nothing
                    refused = f"ClickHouse refused to create table {write.table}: {first_line(exc)}"
                    sources = write.records if isinstance(write, TableRows) else [write.record]
                    batch.dead.extend(dead_letter(r, "warehouse", refused) for r in sources)
                    continue
            if isinstance(write, Truncate):
                warehouse.insert_delete_markers(self._ch, self.database, write.model, write.lsn)
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

    def _type_mismatch(self, write: TableRows) -> str | None:
        """Why rows of a table whose column types differ from the model cannot be written.

        ClickHouse would convert them silently (a 5-digit cost fits a Decimal(6, 2) column's
        storage): the kit never changes a type itself, so the rows wait for a person's ALTER.
        Asked again each batch, so they flow again as soon as the column was changed.
        """
        if self._type_differs.get(write.table):
            self.sync(write.table, write.model)
        differs = self._type_differs.get(write.table)
        if not differs:
            return None
        column, (have, want) = next(iter(differs.items()))
        table = olap.table_name(write.model, self.database)
        return (
            f"column {column} is {have} in ClickHouse but {want} in {write.model.__name__}: "
            f"the kit never changes a column's type; run ALTER TABLE {table} MODIFY COLUMN "
            f"`{column}` {want}, then router.replay_dead_letters()"
        )

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

    def _insert(self, model: type[olap.CdcOlapModelBase], rows: list[list[Any]]) -> None:
        types = olap.layout(model).types
        self._ch.insert(
            model.__table__,
            rows,
            column_names=list(types),
            column_type_names=list(types.values()),
            database=self.database,
            settings=self.insert_settings or None,
        )

    def park(self, letters: list[DeadLetter], group: str) -> None:
        if not letters:
            return
        write_dead_letters(self._ch, self.database, letters, group)
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
            raise FixableError(f"{undelivered} dead letters not delivered to the dead-letter topic")

    def mark_replayed(self, letters: list[DeadLetter], group: str) -> None:
        write_dead_letters(self._ch, self.database, letters, group, replayed=1)

    def dead_letters(self, group: str, include_replayed: bool = False) -> list[dict[str, Any]]:
        waiting = "" if include_replayed else " AND `replayed` = 0"
        table = dead_letter_table(self.database)
        query = (
            f"SELECT * FROM {table} FINAL WHERE `group` = {{group:String}}{waiting} "  # noqa: S608
            "ORDER BY `offset`"
        )
        result = self._ch.query(query, parameters={"group": group})
        return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]

    def record_progress(self, group: str, end_lsn: int) -> None:
        write_progress(self._ch, self.database, group, end_lsn)

    def stored_values(
        self, table: str, model: type, key: tuple, columns: list[str]
    ) -> dict[str, Any] | None:
        return warehouse.stored_values(self._ch, self.database, model, key, columns)

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush(10)
            self._producer = None


@dataclass
class MemorySink:
    """The in-memory twin of `ClickHouseSink`: the same contract, dicts for tables.

    `tables` keeps every row written, in order (duplicates included, as ClickHouse stores
    them before a merge); `fail_next_write` makes the next `write` raise, as an unreachable
    ClickHouse does.
    """

    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    parked: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    progress: dict[str, int] = field(default_factory=dict)
    fail_next_write: Exception | None = None
    ready: bool = False

    def prepare(self, registry: dict[str, type[olap.CdcOlapModelBase]]) -> None:
        for table in registry:
            self.tables.setdefault(table, [])
        self.ready = True

    def sync(self, table: str, model: type[olap.CdcOlapModelBase]) -> None:
        self.tables.setdefault(table, [])

    def write(self, batch: RoutedBatch) -> BatchResult:
        if self.fail_next_write is not None:
            failure, self.fail_next_write = self.fail_next_write, None
            raise failure
        result = BatchResult(consumed=batch.consumed, progress_lsn=batch.progress_lsn)
        for write in batch.writes:
            rows = self.tables.setdefault(write.table, [])
            if isinstance(write, Truncate):
                for row in self.final(write.table):
                    rows.append({**row, "is_deleted": 1, "lsn": write.lsn})
                result.tables[write.table] += 1
                continue
            columns = olap.layout(write.model).columns
            rows.extend(dict(zip(columns, row, strict=True)) for row in write.rows)
            result.tables[write.table] += len(write.rows)
        result.routed = sum(result.tables.values())
        result.dead_lettered = len(batch.dead)
        result.dead_by_stage.update(letter.stage for letter in batch.dead)
        return result

    def final(self, table: str, key: str = "id") -> list[dict[str, Any]]:
        """What `SELECT ... FINAL` would show: the newest version per key, deleted rows hidden."""
        newest: dict[Any, dict[str, Any]] = {}
        for row in self.tables.get(table, []):
            if row[key] not in newest or row["lsn"] >= newest[row[key]]["lsn"]:
                newest[row[key]] = row
        return [row for row in newest.values() if not row["is_deleted"]]

    def park(self, letters: list[DeadLetter], group: str) -> None:
        for letter in letters:
            self.parked.setdefault(group, {})[letter.id] = _as_dict(letter, replayed=0)

    def mark_replayed(self, letters: list[DeadLetter], group: str) -> None:
        for letter in letters:
            self.parked.setdefault(group, {})[letter.id] = _as_dict(letter, replayed=1)

    def dead_letters(self, group: str, include_replayed: bool = False) -> list[dict[str, Any]]:
        letters = self.parked.get(group, {}).values()
        chosen = [row for row in letters if include_replayed or not row["replayed"]]
        return sorted(chosen, key=lambda row: row["offset"])

    def record_progress(self, group: str, end_lsn: int) -> None:
        self.progress[group] = end_lsn

    def stored_values(
        self, table: str, model: type, key: tuple[Any, ...], columns: list[str]
    ) -> dict[str, Any] | None:
        keys = getattr(model, "__order_by__", ("id",))
        for row in self.final(table):
            if tuple(row[k] for k in keys) == key:
                return {column: row[column] for column in columns}
        return None

    def close(self) -> None:
        pass


def _as_dict(letter: DeadLetter, replayed: int) -> dict[str, Any]:
    """A dead letter as `ClickHouseSink.dead_letters` returns it."""
    return {
        "id": letter.id,
        "stage": letter.stage,
        "error": letter.error,
        "topic": letter.topic,
        "partition": letter.partition,
        "offset": letter.offset,
        "key": (letter.key or b"").decode("utf-8", "replace"),
        "value": base64.b64encode(letter.value).decode("ascii"),
        "failed_at": letter.failed_at,
        "replayed": replayed,
    }
