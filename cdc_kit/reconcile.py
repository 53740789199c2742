"""Does ClickHouse hold exactly what PostgreSQL holds? Row by row, per table.

`compare(pg_engine, ch)` reads every registered table on both sides — PostgreSQL as it is now,
ClickHouse with FINAL (deduplicated, deleted rows hidden) — and reports rows that are missing in
ClickHouse, extra there (deleted at the source but alive in the warehouse), or different.
An empty result means the pipeline is correct for this moment.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from clickhouse_connect.driver.binding import quote_identifier
from sqlalchemy import text

from cdc_kit import olap
from cdc_kit.warehouse import table_exists


@dataclass
class TableDiff:
    """Differences of one table: keys missing/extra in ClickHouse, and changed rows."""

    table: str
    missing: list[tuple] = field(default_factory=list)
    extra: list[tuple] = field(default_factory=list)
    changed: dict[tuple, tuple[dict, dict]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.missing or self.extra or self.changed)

    def __str__(self) -> str:
        return (
            f"{self.table}: {len(self.missing)} missing, {len(self.extra)} extra, "
            f"{len(self.changed)} changed"
        )


def _normalize(value: Any) -> Any:
    """Make both sides comparable: UTC-naive datetimes, Decimals by value."""
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC).replace(tzinfo=None)
    if isinstance(value, Decimal):
        return value.normalize()
    return value


def _pg_rows(pg_engine: Any, table: str, columns: list[str], keys: list[str]) -> dict[tuple, dict]:
    quote = pg_engine.dialect.identifier_preparer.quote
    select = ", ".join(quote(c) for c in columns)
    with pg_engine.connect() as conn:
        result = conn.execute(text(f"SELECT {select} FROM {quote(table)}"))  # noqa: S608 - quoted
        rows = [dict(zip(columns, row, strict=True)) for row in result]
    return {tuple(row[k] for k in keys): {c: _normalize(v) for c, v in row.items()} for row in rows}


def _ch_rows(ch: Any, database: str, table: str, columns: list[str], keys: list[str]) -> dict:
    select = ", ".join(quote_identifier(c) for c in columns)
    name = f"{quote_identifier(database)}.{quote_identifier(table)}"
    if not table_exists(ch, database, table):
        return {}
    result = ch.query(f"SELECT {select} FROM {name} FINAL")  # noqa: S608 - quoted identifiers
    rows = [dict(zip(columns, row, strict=True)) for row in result.result_rows]
    return {tuple(row[k] for k in keys): {c: _normalize(v) for c, v in row.items()} for row in rows}


def compare(
    pg_engine: Any,
    ch: Any,
    tables: list[str] | None = None,
    database: str = "local",
    registry: dict[str, type[olap.CdcOlapModelBase]] | None = None,
) -> dict[str, TableDiff]:
    """Per-table differences between PostgreSQL and ClickHouse FINAL; only tables that differ."""
    registry = registry or olap.OLAP_MODELS
    diffs: dict[str, TableDiff] = {}
    for table in tables or list(registry):
        model = registry[table]
        keys = olap.order_by_of(model)
        columns = [c for c in olap.columns_of(model) if c not in ("is_deleted", "lsn")]
        source = _pg_rows(pg_engine, table, columns, keys)
        warehouse = _ch_rows(ch, database, table, columns, keys)
        diff = TableDiff(table)
        diff.missing = sorted(k for k in source if k not in warehouse)
        diff.extra = sorted(k for k in warehouse if k not in source)
        for key in source.keys() & warehouse.keys():
            if source[key] != warehouse[key]:
                diff.changed[key] = (source[key], warehouse[key])
        if diff:
            diffs[table] = diff
    return diffs
