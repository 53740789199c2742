"""The router's decision, free of I/O: Kafka records in -> writes per table, dead letters, progress.

    records --parse--> ChangeEvent --registry--> OLAP model --validate--> row (in table order)
       \\                  \\                         \\
        +------------------+-------------------------+--> dead letter (stage + reason)

`route()` is a pure function of its inputs. The one thing it may need from the warehouse, the
stored value of an unchanged TOASTed column, it asks through the `stored_values` callable the
caller passes in (the Router reads ClickHouse; tests pass a dict lookup).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

from cdc_kit import olap
from cdc_kit.contract import ChangeEvent, EventParseError, parse_event
from cdc_kit.errors import CdcKitError
from cdc_kit.router.dead_letters import DeadLetter, Stage


class Record(NamedTuple):
    """What the router needs of one Kafka message (any client's message converts to this)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


class RoutingError(CdcKitError):
    """An event that cannot be routed; `stage` says where it failed."""

    def __init__(self, stage: Stage, message: str) -> None:
        super().__init__(message)
        self.stage = stage


@dataclass
class TableRows:
    """Rows for one INSERT into one table, with the records they came from (for dead letters)."""

    table: str
    model: type[olap.CdcOlapModelBase]
    rows: list[list[Any]] = field(default_factory=list)
    records: list[Record] = field(default_factory=list)


@dataclass
class Truncate:
    """TRUNCATE at the source: every live row of `table` gets a delete marker at `lsn`."""

    table: str
    model: type[olap.CdcOlapModelBase]
    lsn: int
    record: Record


@dataclass
class RoutedBatch:
    """What to write, in order, and what could not be routed."""

    consumed: int = 0
    writes: list[TableRows | Truncate] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    #: End LSN of the last transaction whose last event is in this batch: once the writes are
    #: done, every change up to it is in ClickHouse (capture may then release the WAL).
    progress_lsn: int | None = None


#: (table, model, primary key, columns) -> the stored values of those columns, or None.
StoredValues = Callable[[str, type, tuple[Any, ...], list[str]], dict[str, Any] | None]


def dead_letter(record: Record, stage: Stage, error: str) -> DeadLetter:
    """A dead letter for a record: the original bytes, where it came from, why, and when."""
    return DeadLetter(
        stage=stage,
        error=error,
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=record.key,
        value=bytes(record.value or b""),
        failed_at=datetime.now(UTC),
    )


def route(
    records: list[Record],
    registry: Mapping[str, type[olap.CdcOlapModelBase]],
    stored_values: StoredValues | None = None,
) -> RoutedBatch:
    """Decide what every record becomes: a row of its table's INSERT, a truncate, a dead letter.

    Rows of one table are grouped into one INSERT, in order; a truncate closes the groups
    before it, so rows written before it are marked deleted by it and rows after it survive.
    """
    batch = RoutedBatch(consumed=len(records))
    open_groups: dict[str, TableRows] = {}
    #: The newest routed row per (table, key), for unchanged TOAST values (rows not yet stored).
    newest: dict[tuple[str, tuple[Any, ...]], list[Any]] = {}
    for record in records:
        try:
            event = parse_event(record.value)
        except EventParseError as exc:
            batch.dead.append(dead_letter(record, "decode", str(exc)))
            continue
        try:
            model = registry.get(event.table)
            if model is None:
                raise RoutingError("lookup", f"no OLAP model registered for table {event.table!r}")
            if event.operation == "truncate":
                open_groups.pop(event.table, None)  # later rows must not join earlier ones
                newest = {k: v for k, v in newest.items() if k[0] != event.table}
                batch.writes.append(Truncate(event.table, model, event.lsn, record))
            else:
                row = _row(event, model, newest, stored_values)
                group = open_groups.get(event.table)
                if group is None:
                    group = open_groups[event.table] = TableRows(event.table, model)
                    batch.writes.append(group)
                group.rows.append(row)
                group.records.append(record)
        except RoutingError as exc:
            batch.dead.append(dead_letter(record, exc.stage, str(exc)))
        end_lsn = event.end_lsn if event.last_in_txn else None
        if end_lsn:
            batch.progress_lsn = max(batch.progress_lsn or 0, end_lsn)
    return batch


def _row(
    event: ChangeEvent,
    model: type[olap.CdcOlapModelBase],
    newest: dict[tuple[str, tuple[Any, ...]], list[Any]],
    stored_values: StoredValues | None,
) -> list[Any]:
    payload = event.payload
    if event.unchanged_toast:
        payload = _fill_unchanged_toast(event, model, newest, stored_values)
    try:
        row = olap.row_values(model, event, payload)
    except olap.OlapValidationError as exc:
        raise RoutingError("validate", str(exc)) from exc
    # The primary key columns come first in a row (olap.columns_of).
    newest[(event.table, tuple(row[: len(model.__order_by__)]))] = row
    return row


def _fill_unchanged_toast(
    event: ChangeEvent,
    model: type[olap.CdcOlapModelBase],
    newest: dict[tuple[str, tuple[Any, ...]], list[Any]],
    stored_values: StoredValues | None,
) -> dict[str, Any]:
    """Take unchanged TOAST values from the newest known version of the row."""
    key = tuple(event.payload.get(column) for column in model.__order_by__)
    missing = list(event.unchanged_toast)
    routed = newest.get((event.table, key))
    if routed is not None:
        current: dict[str, Any] | None = dict(zip(olap.layout(model).columns, routed, strict=True))
    elif stored_values is not None:
        current = stored_values(event.table, model, key, missing)
    else:
        current = None
    if current is None or any(column not in current for column in missing):
        raise RoutingError(
            "enrich",
            f"unchanged TOAST column(s) {', '.join(missing)} of {event.table} {key}: no stored "
            "row to take them from (set REPLICA IDENTITY FULL, or replay once it exists)",
        )
    return {**event.payload, **{column: current[column] for column in missing}}
