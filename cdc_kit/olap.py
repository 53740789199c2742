"""The warehouse side: OLAP models, the registry the router looks tables up in, and their DDL.

An OLAP model is the OLTP `*Base` class (same columns) plus two CDC columns:

    is_deleted  UInt8   1 for a delete event (the row is a "delete marker")
    lsn         UInt64  the change's position in PostgreSQL's log: the row's version

ClickHouse's ReplacingMergeTree(lsn, is_deleted) keeps, per primary key, the row with the
highest lsn, and drops the key when that row is a delete marker. Three corrections to the seed
(lesson 05 shows the first two live):

1. Delete events carry only the primary key. The seed filled every None with a type default
   ('' for str, 0 for int...), but for *every* event, so a genuine NULL in an update became ''
   (on Python 3.11-3.13 only where the column is spelled `Optional[X]`, as the seed's
   `get_origin(...) is Union` test misses `X | None` there; from 3.14 for both spellings).
   Here defaults are filled **only for deletes**, in a copy of the event.
2. The seed's OLAP models keep the OLTP bases' rules on every column they do not redeclare, so
   a delete's '' fails `min_length=1`: customer deletes (name, country, city) and product
   deletes (name) failed validation; order and orderitem deletes passed, because those models
   redeclare their numbers with `ge=0`. Business rules belong to the source; the warehouse
   keeps the *types* and drops those value constraints.
3. The table's ORDER BY must be the source primary key, or a delete marker does not replace
   the row it deletes. `create_table_sql` refuses anything else.
"""

from __future__ import annotations

import enum
import types
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Annotated, Any, ClassVar, Union, get_args, get_origin

import annotated_types
from clickhouse_connect.driver.binding import quote_identifier
from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, model_validator
from pydantic_core import PydanticUndefined

from cdc_kit.contract import ChangeEvent
from cdc_kit.errors import CdcKitError
from cdc_kit.oltp import CustomerBase, OrderBase, OrderItemBase, ProductBase

EPOCH = datetime(1970, 1, 1)


class OlapValidationError(CdcKitError, ValueError):
    """An event whose payload does not fit its OLAP model; the message says which fields."""


def describe_validation_error(exc: ValidationError) -> str:
    """Pydantic's errors as one readable line: `email: Field required; ...`."""
    return "; ".join(
        f"{'.'.join(str(part) for part in error['loc']) or 'event'}: {error['msg']}"
        for error in exc.errors()
    )


# ---- type helpers ---------------------------------------------------------------------------
def unwrap(annotation: Any) -> tuple[Any, bool, list[Any]]:
    """(base type, nullable?, Annotated hints) of `Annotated[Optional[X], ...]` and friends."""
    hints: list[Any] = []
    nullable = False
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation, *extra = get_args(annotation)
            hints.extend(extra)
        elif origin in (Union, types.UnionType):
            members = [arg for arg in get_args(annotation) if arg is not type(None)]
            nullable = nullable or len(members) < len(get_args(annotation))
            annotation = members[0]
        else:
            return annotation, nullable, hints


def default_for(annotation: Any) -> Any:
    """The value a delete marker carries in a non-key column: the type's 'zero'."""
    base, _, _ = unwrap(annotation)
    if isinstance(base, type) and issubclass(base, enum.Enum):
        return next(iter(base))
    defaults: dict[Any, Any] = {
        str: "",
        bool: False,
        int: 0,
        float: 0.0,
        Decimal: Decimal(0),
        datetime: EPOCH,
        date: EPOCH.date(),
        uuid.UUID: uuid.UUID(int=0),
        list: [],
        dict: {},
    }
    for kind, value in defaults.items():
        if base is kind or (isinstance(base, type) and issubclass(base, kind)):
            return value
    if get_origin(base) in (list, dict):
        return get_origin(base)()
    return None


_VALUE_CONSTRAINTS = (
    annotated_types.MinLen, annotated_types.MaxLen, annotated_types.Gt, annotated_types.Ge,
    annotated_types.Lt, annotated_types.Le, annotated_types.MultipleOf,
)  # fmt: skip


#: ClickHouse integer hints and their width in bits.
_INTEGER_BITS = {"uint8": 8, "uint16": 16, "uint32": 32, "uint64": 64,
                 "int8": 8, "int16": 16, "int32": 32, "int64": 64}  # fmt: skip


def _column_range(metadata: list[Any]) -> list[Any]:
    """The range an integer column's ClickHouse type holds, as validation rules.

    Not a business rule: a value outside it (a negative id for UInt64) could never be stored,
    and ClickHouse would refuse the whole INSERT. Checked here, the event is dead-lettered at
    `validate` with the reason, and the batch's other rows go in at once.
    """
    hint = next((h for h in metadata if isinstance(h, str) and h in _INTEGER_BITS), None)
    if hint is None:
        return []
    bits = _INTEGER_BITS[hint]
    if hint.startswith("u"):
        return [annotated_types.Ge(0), annotated_types.Le(2**bits - 1)]
    return [annotated_types.Ge(-(2 ** (bits - 1))), annotated_types.Le(2 ** (bits - 1) - 1)]


# ---- the base class ------------------------------------------------------------------------
class CdcFields(BaseModel):
    """The two columns every CDC table adds."""

    is_deleted: Annotated[int, "uint8"] = 0
    lsn: Annotated[int, "uint64"] = 0


class CdcOlapModelBase(BaseModel):
    """Base of every OLAP model. Subclass it together with an OLTP `*Base` and `CdcFields`.

    Class settings:
    - `__table__`: the source table name (= the ClickHouse table name);
    - `__order_by__`: the source primary key columns (default: `("id",)`).
    """

    model_config = ConfigDict(extra="ignore", validate_assignment=False)

    __table__: ClassVar[str]
    __order_by__: ClassVar[tuple[str, ...]] = ("id",)
    __source_primary_key__: ClassVar[tuple[str, ...]] = ("id",)

    # Plain Pydantic construction and validation. The OLTP bases are SQLModel classes, whose
    # __init__ and model_validate serve SQLAlchemy-mapped tables; an OLAP model maps no table,
    # and through them every event was validated twice (measured: half the routing time).
    __new__ = object.__new__
    __init__ = BaseModel.__init__
    model_validate = BaseModel.__dict__["model_validate"]

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        """Keep each inherited column's type; drop its source-side value rules and defaults.

        Value rules (min_length, gt...) belong to the source: a delete's '' or 0 must pass.
        Defaults too: the source fills `createdAt` or `status` when a row is written; the
        warehouse must never invent them, so a column missing from an event is an error
        (deletes get type defaults in `fill_defaults_for_deletes`).
        """
        super().__pydantic_init_subclass__(**kwargs)
        for name, field in cls.model_fields.items():
            if name in CdcFields.model_fields:
                continue
            field.metadata = [m for m in field.metadata if not isinstance(m, _VALUE_CONSTRAINTS)]
            field.metadata += _column_range(field.metadata)
            field.default = PydanticUndefined
            field.default_factory = None
        cls.model_rebuild(force=True)

    @model_validator(mode="before")
    @classmethod
    def fill_defaults_for_deletes(cls, data: Any, info: ValidationInfo) -> Any:
        """Deletes only: replace each missing/None column with its type's default.

        On inserts and updates a None stays None: it is a real NULL (nullable column) or an
        error (non-nullable column) — never silently ''.
        """
        if not isinstance(data, dict) or (info.context or {}).get("operation") != "delete":
            return data
        filled = dict(data)
        for name, field in cls.model_fields.items():
            if filled.get(name) is None:
                _, nullable, _ = unwrap(field.annotation)
                filled[name] = None if nullable else default_for(field.annotation)
        return filled


# ---- the four OLAP models (the OLTP bases supply the columns) -----------------------------
# (mypy: CdcOlapModelBase's pydantic config replaces SQLModel's on purpose, hence the ignores.)
class CustomerOlap(CdcOlapModelBase, CustomerBase, CdcFields):  # type: ignore[misc]
    __table__ = "customer"
    id: Annotated[int, "uint64"]
    country: Annotated[str, "LowCardinality"]


class ProductOlap(CdcOlapModelBase, ProductBase, CdcFields):  # type: ignore[misc]
    __table__ = "product"
    id: Annotated[int, "uint64"]
    category: Annotated[str, "LowCardinality"]


class OrderOlap(CdcOlapModelBase, OrderBase, CdcFields):  # type: ignore[misc]
    __table__ = "order"
    id: Annotated[int, "uint64"]
    customerId: Annotated[int, "uint64"]
    status: Annotated[str, "LowCardinality"]


class OrderItemOlap(CdcOlapModelBase, OrderItemBase, CdcFields):  # type: ignore[misc]
    __table__ = "orderitem"
    id: Annotated[int, "uint64"]
    orderId: Annotated[int, "uint64"]
    productId: Annotated[int, "uint64"]


# ---- the registry -----------------------------------------------------------------------------
#: Source table name -> OLAP model. The router looks events up here at run time.
OLAP_MODELS: dict[str, type[CdcOlapModelBase]] = {}


class ModelError(CdcKitError, ValueError):
    """A model that cannot work as a CDC table; the message says why and what to change."""


def check_model(model: Any) -> None:
    """Refuse, with the reason, a model the router could never write (before ClickHouse is asked).

    It must be a CdcOlapModelBase with `__table__`, the columns `is_deleted` and `lsn`, a
    ClickHouse type for every column, and ORDER BY = the source primary key.
    """
    name = getattr(model, "__name__", repr(model))
    if not isinstance(model, type) or not issubclass(model, CdcOlapModelBase):
        raise ModelError(f"{name} is not a CdcOlapModelBase subclass")
    cdc_model: type[CdcOlapModelBase] = model
    if not isinstance(getattr(model, "__table__", None), str) or not cdc_model.__table__:
        raise ModelError(f"{name} has no __table__ (the source table name)")
    for cdc_column in ("is_deleted", "lsn"):
        if cdc_column not in cdc_model.model_fields:
            raise ModelError(
                f"{name} has no {cdc_column!r} column: inherit CdcFields "
                "(ReplacingMergeTree(lsn, is_deleted) needs both)"
            )
    for column in cdc_model.__order_by__:
        if column not in cdc_model.model_fields:
            raise ModelError(f"{name}: ORDER BY column {column!r} is not a field of the model")
        if unwrap(cdc_model.model_fields[column].annotation)[1]:
            raise ModelError(f"{name}: ORDER BY column {column!r} must not be Optional")
    for column, field in cdc_model.model_fields.items():
        try:
            clickhouse_type(field.annotation, field.metadata)
        except TypeError as exc:
            raise ModelError(f"{name}.{column}: {exc}") from None
    table_sql_order_by(model)


def register(model: type[CdcOlapModelBase], registry: dict | None = None) -> type[CdcOlapModelBase]:
    """Route events of `model.__table__` to `model`: the one step to add a table.

    A model that cannot work is refused here with the reason (`ModelError`), not later by
    ClickHouse in the middle of routing.
    """
    check_model(model)
    (OLAP_MODELS if registry is None else registry)[model.__table__] = model
    return model


# ---- events -> rows ---------------------------------------------------------------------------
def columns_of(model: type[CdcOlapModelBase]) -> list[str]:
    """Column names in table order: primary key first, then the rest, is_deleted and lsn last."""
    keys = list(model.__order_by__)
    rest = [n for n in model.model_fields if n not in keys and n not in ("is_deleted", "lsn")]
    return [*keys, *rest, "is_deleted", "lsn"]


def order_by_of(model: type[CdcOlapModelBase]) -> list[str]:
    return list(model.__order_by__)


def to_row(
    model: type[CdcOlapModelBase], event: ChangeEvent, payload: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Validate one event against its model and return the ClickHouse row (column -> value)."""
    return dict(zip(columns_of(model), row_values(model, event, payload), strict=True))


def row_values(
    model: type[CdcOlapModelBase], event: ChangeEvent, payload: dict[str, Any] | None = None
) -> list[Any]:
    """Validate one event against its model; the row's values in `columns_of` order.

    `payload` replaces the event's payload (the router passes one with TOAST values filled).
    """
    data = dict(event.payload if payload is None else payload)
    data["lsn"] = event.lsn
    data["is_deleted"] = 1 if event.operation == "delete" else 0
    shape = layout(model)
    for key in shape.keys:
        if data.get(key) is None:
            missing = [k for k in shape.keys if data.get(k) is None]
            raise OlapValidationError(f"primary key column(s) missing: {', '.join(missing)}")
    try:
        instance = model.model_validate(data, context={"operation": event.operation})
    except ValidationError as exc:
        raise OlapValidationError(describe_validation_error(exc)) from None
    values = instance.__dict__
    row = [values[column] for column in shape.columns]
    for index in shape.convert:
        row[index] = _clickhouse_value(row[index])
    return row


@dataclass(frozen=True)
class Layout:
    """What the router needs of a model per row, computed once: the columns in table order,
    their ClickHouse types, the key, and which columns need converting."""

    columns: list[str]
    types: dict[str, str]  # column -> ClickHouse type, in table order
    keys: list[str]
    convert: list[int]  # indexes of enum and datetime columns


_LAYOUTS: dict[type, Layout] = {}


def layout(model: type[CdcOlapModelBase]) -> Layout:
    found = _LAYOUTS.get(model)
    if found is None:
        columns = columns_of(model)
        convert = []
        for index, column in enumerate(columns):
            base, _, _ = unwrap(model.model_fields[column].annotation)
            if base is datetime or (isinstance(base, type) and issubclass(base, enum.Enum)):
                convert.append(index)
        found = Layout(columns, column_types(model), list(model.__order_by__), convert)
        _LAYOUTS[model] = found
    return found


def _clickhouse_value(value: Any) -> Any:
    """Enums as their value; datetimes in UTC and time-zone aware (naive ones taken as UTC).

    clickhouse-connect turns an aware datetime into the right instant, but reads a naive one
    in the router's LOCAL time zone: on a laptop in Paris every time would move by an hour.
    """
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, datetime):
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        if value.utcoffset():
            return value.astimezone(UTC)
    return value


# ---- DDL --------------------------------------------------------------------------------------
_HINTS = {
    "uint8": "UInt8", "uint16": "UInt16", "uint32": "UInt32", "uint64": "UInt64",
    "int8": "Int8", "int16": "Int16", "int32": "Int32", "int64": "Int64",
    "float32": "Float32", "float64": "Float64",
}  # fmt: skip


def clickhouse_type(annotation: Any, field_metadata: list[Any] | None = None) -> str:
    """ClickHouse column type for a model annotation (with `Annotated` hints honoured)."""
    base, nullable, hints = unwrap(annotation)
    # Pydantic moves `Annotated[...]` extras of a field into its metadata: read both places.
    hints = [*hints, *(field_metadata or [])]
    low_cardinality = "LowCardinality" in hints
    named = next((_HINTS[h] for h in hints if isinstance(h, str) and h in _HINTS), None)
    if named:
        inner = named
    elif isinstance(base, type) and issubclass(base, enum.Enum):
        inner, low_cardinality = "String", True
    elif base is bool:
        inner = "Bool"
    elif base is int:
        inner = "Int64"
    elif base is float:
        inner = "Float64"
    elif base is Decimal:
        digits, places = _decimal_precision(field_metadata or [])
        inner = f"Decimal({digits}, {places})"
    elif base is datetime:
        inner = "DateTime64(6, 'UTC')"
    elif base is date:
        inner = "Date"
    elif base is uuid.UUID:
        inner = "UUID"
    elif base is str:
        inner = "String"
    elif get_origin(base) in (list, dict) or base in (list, dict):
        inner = "String"  # stored as JSON text
    else:
        raise TypeError(f"no ClickHouse type for {annotation!r}")
    if nullable:
        inner = f"Nullable({inner})"
    return f"LowCardinality({inner})" if low_cardinality else inner


def _decimal_precision(metadata: list[Any]) -> tuple[int, int]:
    digits, places = 10, 2
    for item in metadata:
        digits = getattr(item, "max_digits", None) or digits
        places = getattr(item, "decimal_places", None) or places
    return digits, places


def table_sql_order_by(model: type[CdcOlapModelBase]) -> str:
    """The ORDER BY clause; refuses anything but the source primary key (with the reason)."""
    order_by = tuple(model.__order_by__)
    primary_key = tuple(model.__source_primary_key__)
    if order_by != primary_key:
        raise ModelError(
            f"{model.__name__}: ORDER BY {order_by} must be the source primary key "
            f"{primary_key}. ReplacingMergeTree replaces rows with equal ORDER BY keys, and a "
            "delete event carries only the primary key (other columns hold defaults), so with "
            "any other key the delete marker does not replace the row it deletes."
        )
    return ", ".join(quote_identifier(column) for column in order_by)


def column_types(model: type[CdcOlapModelBase]) -> dict[str, str]:
    """Column name -> ClickHouse type, in table order."""
    fields = model.model_fields
    return {
        name: clickhouse_type(fields[name].annotation, fields[name].metadata)
        for name in columns_of(model)
    }


def table_name(model: type[CdcOlapModelBase], database: str = "local") -> str:
    """The model's table as a quoted, qualified name: `local`.`order`."""
    return f"{quote_identifier(database)}.{quote_identifier(model.__table__)}"


def create_table_sql(model: type[CdcOlapModelBase], database: str = "local") -> str:
    """`CREATE TABLE IF NOT EXISTS` for a model, every identifier quoted."""
    order_by = table_sql_order_by(model)
    columns = [f"    {quote_identifier(name)} {kind}" for name, kind in column_types(model).items()]
    table = table_name(model, database)
    return (
        f"CREATE TABLE IF NOT EXISTS {table} (\n"
        + ",\n".join(columns)
        + f"\n) ENGINE = ReplacingMergeTree(`lsn`, `is_deleted`)\nORDER BY ({order_by})"
    )


for _model in (CustomerOlap, ProductOlap, OrderOlap, OrderItemOlap):
    register(_model)

__all__ = [
    "OLAP_MODELS",
    "CdcFields",
    "CdcOlapModelBase",
    "CustomerOlap",
    "ModelError",
    "OlapValidationError",
    "OrderItemOlap",
    "OrderOlap",
    "ProductOlap",
    "check_model",
    "column_types",
    "columns_of",
    "create_table_sql",
    "register",
    "row_values",
    "to_row",
]


# ---- one table of both worlds (lesson 02) ------------------------------------------------------
def describe(model: type[CdcOlapModelBase]) -> Any:
    """A DataFrame, one row per column: Python type, the source's value rules, PostgreSQL and
    ClickHouse column types. The PostgreSQL side is the SQLModel table named `__table__`."""
    import dataclasses

    import pandas as pd
    from sqlalchemy.dialects import postgresql
    from sqlmodel import SQLModel

    source_table = SQLModel.metadata.tables.get(model.__table__)
    source_classes = [  # the OLTP `*Base` classes the model inherits its columns from
        cls
        for cls in model.__mro__
        if issubclass(cls, SQLModel) and not issubclass(cls, CdcOlapModelBase | CdcFields)
    ]
    rows = []
    for name in columns_of(model):
        field = model.model_fields[name]
        base, nullable, hints = unwrap(field.annotation)
        hints = [*hints, *(h for h in field.metadata if isinstance(h, str))]
        python = getattr(base, "__name__", repr(base))
        if hints:
            python = f"Annotated[{python}, {', '.join(repr(h) for h in hints)}]"
        if nullable:
            python += " | None"
        rules = []
        source = next((cls for cls in source_classes if name in cls.model_fields), None)
        for rule in source.model_fields[name].metadata if source else []:
            if isinstance(rule, _VALUE_CONSTRAINTS):
                rules += [f"{f.name}={getattr(rule, f.name)}" for f in dataclasses.fields(rule)]
        column = source_table.columns.get(name) if source_table is not None else None
        if column is None:
            pg = "(added by CDC)" if name in CdcFields.model_fields else "-"
        else:
            pg = column.type.compile(dialect=postgresql.dialect())
            pg += " PRIMARY KEY" if column.primary_key else ("" if column.nullable else " NOT NULL")
        rows.append(
            {
                "column": name,
                "Python type": python,
                "value rules (source only)": ", ".join(rules),
                "PostgreSQL": pg,
                "ClickHouse": clickhouse_type(field.annotation, field.metadata),
            }
        )
    return pd.DataFrame(rows)
