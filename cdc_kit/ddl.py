"""ClickHouse DDL from Python type annotations: column types, quoting, CREATE TABLE.

This module knows SQL, not models: `cdc_kit.olap` reads a model's fields and calls it.

    clickhouse_type(Annotated[int, "uint64"])               -> 'UInt64'
    clickhouse_type(Annotated[str | None, "LowCardinality"]) -> 'LowCardinality(Nullable(String))'
    quote_identifier("order")                               -> '`order`'

Hints ride along in `typing.Annotated`, as in the seed: "uint8" ... "uint64", "int8" ... "int64",
"float32", "float64" and "LowCardinality".
"""

from __future__ import annotations

import enum
import types
import uuid
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal, NamedTuple, Union, get_args, get_origin

#: Decimal(P, S) when a Decimal field does not say `max_digits` / `decimal_places`: money.
DEFAULT_DECIMAL = (10, 2)
#: Microseconds, stored in UTC: PostgreSQL's timestamptz has the same precision.
DATETIME_TYPE = "DateTime64(6, 'UTC')"

_INTEGER_HINTS = {
    "uint8": "UInt8", "uint16": "UInt16", "uint32": "UInt32", "uint64": "UInt64",
    "int8": "Int8", "int16": "Int16", "int32": "Int32", "int64": "Int64",
}  # fmt: skip
_FLOAT_HINTS = {"float32": "Float32", "float64": "Float64"}
LOW_CARDINALITY = "LowCardinality"


# ---- reading annotations -------------------------------------------------------------------
class Unwrapped(NamedTuple):
    """What an annotation means once its wrappers are peeled off."""

    base: Any  # the inner type: str, int, Decimal, an Enum class, list[int], ...
    nullable: bool  # None was allowed somewhere on the way (Optional[X], X | None)
    hints: tuple[Any, ...]  # the extras of every Annotated[...] layer: "uint64", ...


def unwrap(annotation: Any) -> Unwrapped:
    """Peel `Annotated[...]` and `Optional[...]` layers, in any order and any depth.

    The seed peeled Optional once, then Annotated once, so `Annotated[Optional[str], ...]`
    stayed half wrapped and got no default. A loop handles every nesting. A union of two real
    types (`int | str`) stays as it is: it has no single column type.
    """
    hints: list[Any] = []
    nullable = False
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation, *extras = get_args(annotation)
            hints.extend(extras)
        elif origin in (Union, types.UnionType):
            members = [arg for arg in get_args(annotation) if arg is not type(None)]
            nullable = nullable or len(members) < len(get_args(annotation))
            if len(members) != 1:
                return Unwrapped(Union[tuple(members)], nullable, tuple(hints))  # noqa: UP007
            annotation = members[0]
        else:
            return Unwrapped(annotation, nullable, tuple(hints))


def is_subclass(kind: Any, parent: type) -> bool:
    """`issubclass` that answers False for things that are not classes (list[int], Literal)."""
    return isinstance(kind, type) and issubclass(kind, parent)


def is_string_choice(kind: Any) -> bool:
    """An Enum or a Literal of strings: a small set of values, stored as LowCardinality."""
    if is_subclass(kind, enum.Enum):
        return True
    return get_origin(kind) is Literal and all(isinstance(v, str) for v in get_args(kind))


# ---- column types --------------------------------------------------------------------------
def clickhouse_type(annotation: Any, metadata: Iterable[Any] = ()) -> str:
    """The ClickHouse column type of one field.

    `metadata` is the field's `FieldInfo.metadata`: Pydantic moves the extras of a field's
    outer `Annotated[...]` there (and `max_digits` / `decimal_places` too), so both are read.
    Raises ValueError with the reason for an annotation ClickHouse cannot store as asked.
    """
    base, nullable, hints = unwrap(annotation)
    metadata = list(metadata)
    hints = (*hints, *metadata)
    low_cardinality = LOW_CARDINALITY in hints or is_string_choice(base)
    inner = _scalar_type(base, hints, metadata)
    if low_cardinality and inner != "String":
        raise ValueError(
            f"{annotation!r}: LowCardinality is for strings with few distinct values, "
            f"not for {inner}"
        )
    if nullable:
        if inner.startswith("Array("):
            raise ValueError(f"{annotation!r}: ClickHouse arrays cannot be NULL; drop the None")
        inner = f"Nullable({inner})"
    # Nullable goes inside: LowCardinality(Nullable(String)) is valid, the other way round not.
    return f"{LOW_CARDINALITY}({inner})" if low_cardinality else inner


def _scalar_type(base: Any, hints: Sequence[Any], metadata: list[Any]) -> str:
    """The type without Nullable/LowCardinality wrappers. Order matters: bool is an int and
    datetime is a date in Python, so the narrower type is checked first."""
    named = [hint for hint in hints if isinstance(hint, str) and hint != LOW_CARDINALITY]
    if base is bool:
        return "Bool"
    if base is int:
        return _hinted(named, _INTEGER_HINTS, default="Int64", kind="int")
    if base is float:
        return _hinted(named, _FLOAT_HINTS, default="Float64", kind="float")
    if named:
        raise ValueError(f"hint(s) {named} do not apply to {base!r}")
    if base is Decimal:
        digits, places = decimal_precision(metadata)
        return f"Decimal({digits}, {places})"
    if base is datetime:
        return DATETIME_TYPE
    if base is date:
        return "Date"
    if base is uuid.UUID:
        return "UUID"
    if base is str or is_string_choice(base):
        return "String"
    if base is dict or get_origin(base) is dict:
        return "String"  # stored as JSON text
    if get_origin(base) is list:
        (item,) = get_args(base)
        return f"Array({clickhouse_type(item)})"
    raise ValueError(f"no ClickHouse type for {base!r}")


def _hinted(named: list[str], choices: dict[str, str], default: str, kind: str) -> str:
    known = [choices[hint] for hint in named if hint in choices]
    unknown = [hint for hint in named if hint not in choices]
    if unknown:
        raise ValueError(f"unknown {kind} hint(s) {unknown}; use one of {sorted(choices)}")
    if len(known) > 1:
        raise ValueError(f"several {kind} hints {named}: keep one")
    return known[0] if known else default


def decimal_precision(metadata: Iterable[Any]) -> tuple[int, int]:
    """(precision, scale) from `Field(max_digits=..., decimal_places=...)`, else (10, 2)."""
    digits, places = DEFAULT_DECIMAL
    for item in metadata:
        if getattr(item, "max_digits", None) is not None:
            digits = item.max_digits
        if getattr(item, "decimal_places", None) is not None:
            places = item.decimal_places
    if not 1 <= digits <= 76 or not 0 <= places <= digits:
        raise ValueError(f"Decimal({digits}, {places}): ClickHouse needs 1 <= P <= 76, 0 <= S <= P")
    return digits, places


# ---- statements ----------------------------------------------------------------------------
def quote_identifier(name: str) -> str:
    """`name` in backticks, inner backslashes and backticks escaped.

    Always quote: `order` is a reserved word, and a table name may come from an event.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"an identifier must be a non-empty string, not {name!r}")
    escaped = name.replace("\\", "\\\\").replace("`", "\\`")
    return f"`{escaped}`"


def check_order_by(order_by: Sequence[str], primary_key: Sequence[str], table: str = "") -> None:
    """Refuse, with the reason, a sorting key that is not exactly the source primary key."""
    if tuple(order_by) == tuple(primary_key):
        return
    where = f"{table}: " if table else ""
    raise ValueError(
        f"{where}ORDER BY ({', '.join(order_by)}) must be the source primary key "
        f"({', '.join(primary_key)}). ReplacingMergeTree replaces rows that share the ORDER BY "
        "key, and a delete event carries only the primary key (the other columns hold "
        "defaults), so with any other key the tombstone does not replace the row it deletes."
    )


def replacing_merge_tree_sql(
    database: str,
    table: str,
    columns: Sequence[tuple[str, str]],
    order_by: Sequence[str],
    primary_key: Sequence[str],
    version: str = "lsn",
    is_deleted: str = "is_deleted",
) -> str:
    """`CREATE TABLE IF NOT EXISTS` for a ReplacingMergeTree(version, is_deleted) table.

    `columns` are (name, ClickHouse type) pairs in table order. Every identifier is quoted.
    """
    check_order_by(order_by, primary_key, table)
    names = [name for name, _ in columns]
    missing = [name for name in (*order_by, version, is_deleted) if name not in names]
    if missing:
        raise ValueError(f"{table}: column(s) {', '.join(missing)} not among {names}")
    body = ",\n".join(f"    {quote_identifier(name)} {kind}" for name, kind in columns)
    keys = ", ".join(quote_identifier(name) for name in order_by)
    engine = f"ReplacingMergeTree({quote_identifier(version)}, {quote_identifier(is_deleted)})"
    return (
        f"CREATE TABLE IF NOT EXISTS {quote_identifier(database)}.{quote_identifier(table)} (\n"
        f"{body}\n) ENGINE = {engine}\nORDER BY ({keys})"
    )
