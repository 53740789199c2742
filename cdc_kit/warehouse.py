"""The ClickHouse side of the pipeline: tables from the registry, their columns, the seed's views.

`ensure_tables` creates every registered model's ReplacingMergeTree table and adds the
columns a model gained since (schema changes at the source), so queries and the router never
meet "unknown table" or "no such column". `create_views` adds the analytics views of the seed
(`customer_dim`, `product_dim`, `order_fact`, `orderitem_fact`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from clickhouse_connect.driver.binding import quote_identifier

from cdc_kit import olap


@dataclass
class SchemaChange:
    """What `sync_table` did to one table, and what it saw but leaves to a person."""

    table: str
    created: bool = False
    added: list[str] = field(default_factory=list)
    #: column -> (type in ClickHouse, type of the model): the kit never changes a type itself.
    type_differs: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: Columns ClickHouse has but the model does not: kept (old rows keep their values).
    not_in_model: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        parts = ["created" if self.created else "exists"]
        if self.added:
            parts.append(f"added {', '.join(self.added)}")
        for column, (have, want) in self.type_differs.items():
            parts.append(f"{column} is {have} in ClickHouse but {want} in the model")
        if self.not_in_model:
            parts.append(f"not in the model (kept): {', '.join(self.not_in_model)}")
        return f"{self.table}: " + "; ".join(parts)


def ensure_database(client: Any, database: str) -> None:
    client.command(f"CREATE DATABASE IF NOT EXISTS {quote_identifier(database)}")


def table_exists(client: Any, database: str, table: str) -> bool:
    return bool(
        client.query(
            "SELECT count() FROM system.tables WHERE database = {d:String} AND name = {t:String}",
            parameters={"d": database, "t": table},
        ).result_rows[0][0]
    )


def table_columns(client: Any, database: str, table: str) -> dict[str, str]:
    """Column -> type of a table as ClickHouse has it ({} if the table does not exist)."""
    result = client.query(
        "SELECT name, type FROM system.columns WHERE database = {d:String} AND table = {t:String} "
        "ORDER BY position",
        parameters={"d": database, "t": table},
    )
    return {name: kind for name, kind in result.result_rows}


def sync_table(client: Any, model: type[olap.CdcOlapModelBase], database: str) -> SchemaChange:
    """Create the model's table, or add the columns the model has and the table lacks.

    A new column is added with its type's default (`ADD COLUMN IF NOT EXISTS`), so rows written
    before it read '' / 0 / NULL there. Type changes and columns the model dropped are reported,
    never applied: changing a column's type rewrites data and deserves a person's decision.
    """
    change = SchemaChange(model.__table__)
    existing = table_columns(client, database, model.__table__)
    wanted = olap.column_types(model)
    if not existing:
        client.command(olap.create_table_sql(model, database))
        change.created = True
        return change
    table = olap.table_name(model, database)
    for column, kind in wanted.items():
        if column not in existing:
            client.command(
                f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {quote_identifier(column)} {kind}"
            )
            change.added.append(column)
        elif existing[column] != kind:
            change.type_differs[column] = (existing[column], kind)
    change.not_in_model = [column for column in existing if column not in wanted]
    return change


def ensure_tables(
    client: Any,
    database: str = "local",
    registry: Mapping[str, type[olap.CdcOlapModelBase]] | None = None,
) -> dict[str, SchemaChange]:
    """Create (or bring up to date) the table of every registered model. Table -> change."""
    ensure_database(client, database)
    models = olap.OLAP_MODELS if registry is None else registry
    return {table: sync_table(client, model, database) for table, model in models.items()}


# ---- the seed's analytics views -----------------------------------------------------------
#: The newest version of every row, delete markers included (`FINAL` would hide them): the seed's
#: README expects `is_deleted = 1` to show for a deleted order.
_NEWEST = "(SELECT * FROM {table} ORDER BY `lsn` DESC LIMIT 1 BY {key})"

SEED_VIEWS: dict[str, tuple[tuple[str, ...], str]] = {
    "customer_dim": (
        ("customer",),
        "SELECT `id` AS `customer_id`, `email`, `name`, `country`, `city`, `createdAt` AS "
        "`created_at`, `is_deleted`, `lsn` FROM {customer}",
    ),
    "product_dim": (
        ("product",),
        "SELECT `id` AS `product_id`, `name`, `category`, `price`, `createdAt` AS `created_at`, "
        "`is_deleted`, `lsn` FROM {product}",
    ),
    "order_fact": (
        ("order", "customer"),
        "SELECT o.`id` AS `order_id`, o.`customerId` AS `customer_id`, c.`name` AS "
        "`customer_name`, c.`country` AS `customer_country`, o.`orderDate` AS `order_date`, "
        "o.`status` AS `status`, o.`total` AS `total`, o.`is_deleted` AS `is_deleted`, "
        "o.`lsn` AS `lsn` FROM {order} AS o LEFT JOIN {customer_final} AS c "
        "ON c.`id` = o.`customerId`",
    ),
    "orderitem_fact": (
        ("orderitem", "product"),
        "SELECT i.`id` AS `orderitem_id`, i.`orderId` AS `order_id`, i.`productId` AS "
        "`product_id`, p.`name` AS `product_name`, p.`category` AS `category`, i.`quantity` AS "
        "`quantity`, i.`price` AS `price`, i.`quantity` * i.`price` AS `line_total`, "
        "i.`is_deleted` AS `is_deleted`, i.`lsn` AS `lsn` FROM {orderitem} AS i "
        "LEFT JOIN {product_final} AS p ON p.`id` = i.`productId`",
    ),
}


def create_views(
    client: Any,
    database: str = "local",
    registry: Mapping[str, type[olap.CdcOlapModelBase]] | None = None,
) -> list[str]:
    """Create the seed's four views over the registered tables; returns the views made.

    A view is skipped when a table it reads is not registered (e.g. in a test's registry).
    """
    models = olap.OLAP_MODELS if registry is None else registry
    names: dict[str, str] = {}
    for table, model in models.items():
        qualified = olap.table_name(model, database)
        keys = ", ".join(quote_identifier(k) for k in model.__order_by__)
        names[table] = _NEWEST.format(table=qualified, key=keys)
        names[f"{table}_final"] = f"(SELECT * FROM {qualified} FINAL)"  # noqa: S608 - quoted
    made = []
    for view, (needs, select) in SEED_VIEWS.items():
        if all(table in models for table in needs):
            target = f"{quote_identifier(database)}.{quote_identifier(view)}"
            client.command(f"CREATE OR REPLACE VIEW {target} AS {select.format(**names)}")
            made.append(view)
    return made


# ---- reads and writes the router needs ------------------------------------------------------
def stored_values(
    client: Any, database: str, model: type[olap.CdcOlapModelBase], key: tuple, columns: list[str]
) -> dict[str, Any] | None:
    """The current (FINAL) values of `columns` for one primary key, or None if no live row."""
    keys = olap.order_by_of(model)
    conditions = " AND ".join(
        f"toString({quote_identifier(k)}) = {{k{i}:String}}" for i, k in enumerate(keys)
    )
    select = ", ".join(quote_identifier(c) for c in columns)
    query = f"SELECT {select} FROM {olap.table_name(model, database)} FINAL WHERE {conditions}"  # noqa: S608 - quoted identifiers, bound values
    result = client.query(query, parameters={f"k{i}": str(v) for i, v in enumerate(key)})
    if not result.result_rows:
        return None
    return dict(zip(columns, result.result_rows[0], strict=True))


def row_versions(
    client: Any, database: str, table: str, row_id: int, columns: list[str], final: bool = False
) -> Any:
    """The stored versions of one row (with FINAL: what a correct query sees), oldest first:
    `columns`, then is_deleted and lsn, as a DataFrame."""
    selected = ", ".join(quote_identifier(c) for c in [*columns, "is_deleted", "lsn"])
    source = f"{quote_identifier(database)}.{quote_identifier(table)}"
    return client.query_df(
        f"SELECT {selected} FROM {source} {'FINAL' if final else ''} "  # noqa: S608 - quoted identifiers, bound value
        "WHERE id = {id:UInt64} ORDER BY lsn",
        parameters={"id": int(row_id)},
    )


def insert_delete_markers(
    client: Any, database: str, model: type[olap.CdcOlapModelBase], lsn: int
) -> None:
    """TRUNCATE at the source: mark every live row deleted, at the truncate's LSN."""
    table = olap.table_name(model, database)
    keys = ", ".join(quote_identifier(k) for k in olap.order_by_of(model))
    client.command(
        f"INSERT INTO {table} ({keys}, `is_deleted`, `lsn`) "  # noqa: S608 - quoted identifiers
        f"SELECT {keys}, 1, {{lsn:UInt64}} FROM {table} FINAL",
        parameters={"lsn": lsn},
    )
