"""The warehouse side: OLAP models, the registry the router looks tables up in, and their DDL.

An OLAP model is the OLTP `*Base` class (same columns, declared once) plus two CDC columns:

    is_deleted  UInt8   1 for a delete event (a "tombstone" row)
    lsn         UInt64  the change's position in PostgreSQL's log: the row's version

ClickHouse's ReplacingMergeTree(lsn, is_deleted) keeps, per ORDER BY key, the row with the
highest lsn, and hides the key when that row is a tombstone. Four corrections to the seed:

1. A delete event carries only the primary key; the other columns arrive as null. The seed
   replaced every null with a type default ('' for str, 0 for int, ...) on *every* event, so a
   real NULL in an update became ''. Here defaults are filled **only for deletes**: the
   operation reaches the validator through Pydantic's validation context (`from_event`
   passes it; by hand: `model_validate(data, context={"operation": "delete"})`).
2. The seed's OLAP models inherited `min_length=1` / `gt=0` from the OLTP bases, so a delete
   of a customer (name='') or product (price=0) failed validation. Business rules belong to
   the source; an OLAP model checks *types* only, and drops the inherited value rules.
3. The OLTP defaults (`createdAt` = now, `status` = 'pending', `bio` = None) are dropped too:
   in the warehouse a column missing from an insert or update is an error, never a guess.
4. The table's ORDER BY must be the source primary key, or a tombstone does not replace the
   row it deletes. `create_table_sql` and `register` refuse anything else.

Class settings of an OLAP model (all optional when `__source__` is set):
    __source__       the SQLModel table class the rows come from
    __table__        source table name = ClickHouse table name   (default: the source's)
    __primary_key__  the source primary key columns              (default: the source's, or id)
    __order_by__     ClickHouse sorting key                      (default: the primary key)
"""

from __future__ import annotations

import enum
import json
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Annotated, Any, ClassVar, Literal, Self, get_args, get_origin

import annotated_types
from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, model_validator
from pydantic_core import PydanticUndefined
from sqlmodel import SQLModel

from cdc_kit.ddl import (
    check_order_by,
    clickhouse_type,
    is_subclass,
    quote_identifier,
    replacing_merge_tree_sql,
    unwrap,
)
from cdc_kit.events import CdcEvent, describe_validation_error
from cdc_kit.oltp import (
    Customer,
    CustomerBase,
    Order,
    OrderBase,
    OrderItem,
    OrderItemBase,
    Product,
    ProductBase,
)

#: The default of a datetime column in a tombstone: 1970-01-01 00:00 UTC, stored UTC-naive.
#: (The seed used `datetime.fromtimestamp(0)`, which is the epoch in the *local* time zone.)
EPOCH = datetime(1970, 1, 1)
CDC_COLUMNS = ("is_deleted", "lsn")


class OlapValidationError(ValueError):
    """An event whose payload does not fit its OLAP model; the message says which fields."""


# ---- tombstone defaults ----------------------------------------------------------------------
_TYPE_DEFAULTS: dict[type, Any] = {
    bool: False,  # before int: bool is a subclass of int
    str: "",
    int: 0,
    float: 0.0,
    Decimal: Decimal(0),
    datetime: EPOCH,  # before date: datetime is a subclass of date
    date: EPOCH.date(),
    uuid.UUID: uuid.UUID(int=0),
}


def default_for(annotation: Any) -> Any:
    """The value a tombstone carries in a non-key column: the type's 'zero' (None if unknown)."""
    base = unwrap(annotation).base
    if is_subclass(base, enum.Enum):
        return next(iter(base))
    if get_origin(base) is Literal:
        return get_args(base)[0]
    if base in (list, dict) or get_origin(base) in (list, dict):
        return (get_origin(base) or base)()  # a new empty list/dict each time
    for kind, value in _TYPE_DEFAULTS.items():
        if is_subclass(base, kind):
            return value
    return None


# ---- the two base classes --------------------------------------------------------------------
class CdcFields(BaseModel):
    """The two columns every CDC table adds. Snapshot rows have no LSN: version 0."""

    is_deleted: Annotated[int, "uint8"] = 0
    lsn: Annotated[int, "uint64"] = 0


#: Value rules that belong to the source (see the module doc, point 2).
_SOURCE_RULES = (
    annotated_types.MinLen, annotated_types.MaxLen, annotated_types.Gt, annotated_types.Ge,
    annotated_types.Lt, annotated_types.Le, annotated_types.MultipleOf,
)  # fmt: skip


class CdcOlapModelBase(BaseModel):
    """Base of every OLAP model: subclass it with an OLTP `*Base` and `CdcFields`.

        class CustomerOlap(CdcOlapModelBase, CustomerBase, CdcFields):
            __source__ = Customer
            id: Annotated[int, "uint64"]

    Then `CustomerOlap.from_event(event)` validates one change event.
    """

    # A new source column is ignored until the model gets it (schema changes are a lesson).
    model_config = ConfigDict(extra="ignore")

    __source__: ClassVar[type[SQLModel] | None] = None
    __table__: ClassVar[str | None] = None
    __primary_key__: ClassVar[tuple[str, ...] | None] = None
    __order_by__: ClassVar[tuple[str, ...] | None] = None

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        """Keep each column's type; drop the source's value rules and defaults (points 2, 3).

        Pydantic has no hook between collecting inherited fields and building the validator,
        so the fields are edited here and the validator rebuilt with `model_rebuild(force=True)`.
        """
        super().__pydantic_init_subclass__(**kwargs)
        changed = False
        for name, field in cls.model_fields.items():
            if name in CDC_COLUMNS:
                continue
            kept = [item for item in field.metadata if not isinstance(item, _SOURCE_RULES)]
            if kept != field.metadata or not field.is_required():
                field.metadata = kept
                field.default, field.default_factory = PydanticUndefined, None
                changed = True
        if changed:
            cls.model_rebuild(force=True)

    @model_validator(mode="before")
    @classmethod
    def fill_defaults_for_deletes(cls, data: Any, info: ValidationInfo) -> Any:
        """Deletes only: a missing or null non-key column gets its type's default.

        A nullable column stays null (a tombstone needs no value there). On inserts and
        updates nothing is filled: a null is a real NULL, or an error for a non-nullable
        column — never a silent ''. The key is never filled: a tombstone for id 0 would
        delete nothing, or the wrong row.
        """
        if not isinstance(data, dict) or (info.context or {}).get("operation") != "delete":
            return data
        keys = set(primary_key_of(cls))
        filled = dict(data)
        for name, field in cls.model_fields.items():
            if name in keys or filled.get(name) is not None:
                continue
            filled[name] = None if unwrap(field.annotation).nullable else default_for(field.annotation)
        return filled

    @classmethod
    def from_event(cls, event: CdcEvent, payload: dict[str, Any] | None = None) -> Self:
        """Validate one change event into the row it writes (`payload` overrides the event's).

        Raises OlapValidationError naming what is wrong. Unchanged TOAST columns (listed in
        `event.metadata.unchanged_toast`, absent from the payload) must be merged in first,
        from the newest stored version of the row: the router does that.
        """
        operation = event.metadata.operation
        if operation == "truncate":
            raise OlapValidationError("a truncate event has no row: mark every stored row deleted")
        data = dict(event.payload if payload is None else payload)
        missing_keys = [name for name in primary_key_of(cls) if data.get(name) is None]
        if missing_keys:
            raise OlapValidationError(f"primary key column(s) missing: {', '.join(missing_keys)}")
        unmerged = [name for name in event.metadata.unchanged_toast if name not in data]
        if unmerged and operation != "delete":
            raise OlapValidationError(
                f"unchanged TOAST column(s) {', '.join(unmerged)} not in the payload: take them "
                "from the stored row first (or set REPLICA IDENTITY FULL at the source)"
            )
        data["lsn"] = event.metadata.lsn_int
        data["is_deleted"] = 1 if operation == "delete" else 0
        try:
            return cls.model_validate(data, context={"operation": operation})
        except ValidationError as exc:
            raise OlapValidationError(describe_validation_error(exc)) from None

    def clickhouse_row(self) -> dict[str, Any]:
        """Column -> value, in `columns_of` order, as clickhouse-connect inserts it."""
        values = self.model_dump()
        return {column: clickhouse_value(values[column]) for column in columns_of(type(self))}


def clickhouse_value(value: Any) -> Any:
    """Python value -> what the ClickHouse column takes (UTC-naive times, enum values, JSON)."""
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC).replace(tzinfo=None)
    if isinstance(value, dict):
        return json.dumps(value, default=str)
    return value


# ---- what each model knows about its table ---------------------------------------------------
def table_name_of(model: type[CdcOlapModelBase]) -> str:
    """The source table name, which is also the ClickHouse table name."""
    if model.__table__:
        return model.__table__
    if model.__source__ is not None:
        return model.__source__.__tablename__
    raise ValueError(f"{model.__name__}: set __source__ (a SQLModel table) or __table__")


def primary_key_of(model: type[CdcOlapModelBase]) -> list[str]:
    """The source primary key: declared, else read from the SQLModel table, else ['id']."""
    if model.__primary_key__:
        return list(model.__primary_key__)
    if model.__source__ is not None:
        return [column.name for column in model.__source__.__table__.primary_key.columns]
    return ["id"]


def order_by_of(model: type[CdcOlapModelBase]) -> list[str]:
    """The ClickHouse sorting key: declared (to show the refusal), else the primary key."""
    return list(model.__order_by__ or primary_key_of(model))


def columns_of(model: type[CdcOlapModelBase]) -> list[str]:
    """Column names in insert order: the key first, then the others, is_deleted and lsn last."""
    keys = order_by_of(model)
    others = [name for name in model.model_fields if name not in keys and name not in CDC_COLUMNS]
    return [*keys, *others, *CDC_COLUMNS]


def create_table_sql(model: type[CdcOlapModelBase], database: str = "local") -> str:
    """`CREATE TABLE IF NOT EXISTS` for a model; refuses an ORDER BY that is not the key."""
    columns = []
    for name in columns_of(model):
        field = model.model_fields[name]
        try:
            columns.append((name, clickhouse_type(field.annotation, field.metadata)))
        except ValueError as exc:
            raise ValueError(f"{model.__name__}.{name}: {exc}") from None
    return replacing_merge_tree_sql(
        database,
        table_name_of(model),
        columns,
        order_by=order_by_of(model),
        primary_key=primary_key_of(model),
    )


# ---- the four OLAP models (the OLTP bases supply the columns) -------------------------------
class CustomerOlap(CdcOlapModelBase, CustomerBase, CdcFields):
    __source__ = Customer
    id: Annotated[int, "uint64"]
    country: Annotated[str, "LowCardinality"]


class ProductOlap(CdcOlapModelBase, ProductBase, CdcFields):
    __source__ = Product
    id: Annotated[int, "uint64"]
    category: Annotated[str, "LowCardinality"]


class OrderOlap(CdcOlapModelBase, OrderBase, CdcFields):
    __source__ = Order  # table "order": a reserved word, quoted everywhere
    id: Annotated[int, "uint64"]
    customerId: Annotated[int, "uint64"]
    status: Annotated[str, "LowCardinality"]


class OrderItemOlap(CdcOlapModelBase, OrderItemBase, CdcFields):
    __source__ = OrderItem
    id: Annotated[int, "uint64"]
    orderId: Annotated[int, "uint64"]
    productId: Annotated[int, "uint64"]
    quantity: Annotated[int, "uint32"]


# ---- the registry ----------------------------------------------------------------------------
#: Source table name -> OLAP model. The router looks every event's table up here.
OLAP_MODELS: dict[str, type[CdcOlapModelBase]] = {}


def register(
    table: str | type[CdcOlapModelBase],
    model: type[CdcOlapModelBase] | None = None,
    *,
    registry: dict[str, type[CdcOlapModelBase]] | None = None,
) -> type[CdcOlapModelBase]:
    """Route events of a source table to a model: the one step to add a table.

        register("supplier", SupplierOlap)   # or register(SupplierOlap): its own table name

    The model is checked first (column types, ORDER BY = primary key), so a mistake shows up
    here and not with the first event.
    """
    if isinstance(table, str):
        if model is None:
            raise TypeError("register(table_name, model): the model is missing")
        _bind_table_name(model, table)
    else:
        model = table
    create_table_sql(model)  # raises ValueError with the reason
    (OLAP_MODELS if registry is None else registry)[table_name_of(model)] = model
    return model


def _bind_table_name(model: type[CdcOlapModelBase], table: str) -> None:
    """A model without a table name takes the one it is registered under; others must match."""
    quote_identifier(table)  # a non-empty string
    if model.__table__ is None and model.__source__ is None:
        model.__table__ = table
    elif table_name_of(model) != table:
        raise ValueError(
            f"{model.__name__} writes to table {table_name_of(model)!r}, not {table!r}"
        )


# ---- events -> rows (what the router calls) --------------------------------------------------
def to_row(
    model: type[CdcOlapModelBase], event: CdcEvent, payload: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Validate one event against its model and return the ClickHouse row (column -> value)."""
    return model.from_event(event, payload).clickhouse_row()


for _model in (CustomerOlap, ProductOlap, OrderOlap, OrderItemOlap):
    register(_model)

__all__ = [
    "EPOCH",
    "OLAP_MODELS",
    "CdcFields",
    "CdcOlapModelBase",
    "CustomerOlap",
    "OlapValidationError",
    "OrderItemOlap",
    "OrderOlap",
    "ProductOlap",
    "columns_of",
    "create_table_sql",
    "default_for",
    "order_by_of",
    "primary_key_of",
    "register",
    "table_name_of",
    "to_row",
]
