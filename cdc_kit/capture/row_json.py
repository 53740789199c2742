"""pgoutput rows straight to the contract's JSON: capture's hot path, one row change at a time.

The plain way to publish a row is to convert each column's text to a Python value
(`pgoutput.Decoder.row`) and serialise the dict with `json.dumps`. That costs most of capture's
time per row, and most of it is wasted: PostgreSQL's text for an integer already is JSON.

A `RowWriter` is made once per table layout (each Relation message). For every column it holds
a writer from PostgreSQL's text to JSON text, chosen by the column's converter:

    int             the text, checked                 '42'
    float           Python's repr; NaN and infinities as json.dumps writes them
    Decimal         str(Decimal(text)), quoted        '"12.50"'
    bool            true / false
    no converter    a JSON string                     '"Jane"'  (text, varchar, uuid, ...)
    anything else   json.dumps(converter(text))       dates, timestamps, json, bytea, your own

Each writer returns exactly what `json.dumps(converter(text))` returns, only sooner; the
golden tests (tests/unit/test_contract_golden.py) and tests/unit/test_row_json.py compare them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from json.encoder import encode_basestring
from typing import Any, NoReturn

from cdc_kit import pgoutput
from cdc_kit.contract import OutgoingEvent, json_text

#: PostgreSQL text -> JSON text for one column.
ValueWriter = Callable[[str], str]


def _int_json(text: str) -> str:
    return str(int(text))


def _float_json(text: str) -> str:
    number = float(text)
    if math.isfinite(number):
        return repr(number)
    return "NaN" if number != number else ("Infinity" if number > 0 else "-Infinity")


def _decimal_json(text: str) -> str:
    return '"' + str(Decimal(text)) + '"'  # digits, '.', '-', E, NaN, Infinity: nothing to escape


def _bool_json(text: str) -> str:
    return "true" if pgoutput.DEFAULT_CONVERTERS[16](text) else "false"


def _temporal_writer(convert: pgoutput.Converter) -> ValueWriter:
    """Dates, times and timestamps: isoformat, as json.dumps's default writes them. (A value
    Python cannot hold, such as 'infinity', stays PostgreSQL's text.)"""

    def write(text: str) -> str:
        value = convert(text)
        if value.__class__ is str:
            return encode_basestring(value)
        return '"' + value.isoformat() + '"'  # digits, '-', ':', '.', 'T', '+': no escapes

    return write


#: A timestamp as PostgreSQL writes it (DateStyle ISO), in UTC when the zone is there.
_TIMESTAMP = re.compile(r"(\d{4}-\d\d-\d\d) (\d\d:\d\d:\d\d)(?:\.(\d{1,6}))?")
_TIMESTAMP_UTC = re.compile(_TIMESTAMP.pattern + r"\+00")


def _timestamp_writer(
    pattern: re.Pattern[str], zone: str, convert: pgoutput.Converter
) -> ValueWriter:
    """Timestamps without a datetime, as isoformat writes them:
    '2026-01-02 03:04:05.5+00' -> "2026-01-02T03:04:05.500000+00:00". Capture asks for
    TimeZone=UTC, so timestamptz text arrives in UTC; any other text takes the long way."""
    slow = _temporal_writer(convert)

    def write(text: str) -> str:
        match = pattern.fullmatch(text)
        if match is None:
            return slow(text)
        day, clock, fraction = match.groups()
        if fraction and fraction.strip("0"):
            clock += "." + fraction.ljust(6, "0")
        return f'"{day}T{clock}{zone}"'

    return write


_DEFAULT = pgoutput.DEFAULT_CONVERTERS
#: The converters whose JSON can be written without the general encoder.
_FAST_WRITERS: dict[Any, ValueWriter] = {
    int: _int_json,
    float: _float_json,
    Decimal: _decimal_json,
    _DEFAULT[16]: _bool_json,  # bool
    _DEFAULT[1082]: _temporal_writer(_DEFAULT[1082]),  # date
    _DEFAULT[1083]: _temporal_writer(_DEFAULT[1083]),  # time
    _DEFAULT[1114]: _timestamp_writer(_TIMESTAMP, "", _DEFAULT[1114]),
    _DEFAULT[1184]: _timestamp_writer(_TIMESTAMP_UTC, "+00:00", _DEFAULT[1184]),
}


def value_writer(converter: pgoutput.Converter | None) -> ValueWriter:
    """The writer for a column with this converter (None: the value stays text)."""
    if converter is None:
        return encode_basestring  # json.dumps's own string writer (ensure_ascii=False)
    fast = _FAST_WRITERS.get(converter)
    if fast is not None:
        return fast
    return lambda text: json_text(converter(text))


class RowWriter:
    """One table layout's rows as the contract's JSON: payload, metadata and message key."""

    def __init__(
        self,
        relation: pgoutput.Relation,
        converters: Mapping[int, pgoutput.Converter],
        key_columns: Iterable[str],
    ) -> None:
        self.relation = relation
        self.table = relation.name
        columns = relation.columns
        self._converters = converters
        self._names = tuple(column.name for column in columns)
        self._fields = tuple(encode_basestring(name) + ":" for name in self._names)
        self._writers = tuple(value_writer(converters.get(column.type_oid)) for column in columns)
        positions = {column.name: index for index, column in enumerate(columns)}
        # (position, converter) per key column; position None: the layout has no such column.
        self._key_plan = tuple(
            (index, None if index is None else converters.get(columns[index].type_oid))
            for index in map(positions.get, key_columns)
        )
        # The metadata's fixed parts, in the contract's key order: table, operation, lsn,
        # schema, xid (and unchanged_toast when there is one).
        self._heads = {
            operation: f'{{"table":{encode_basestring(self.table)},'
            f'"operation":"{operation}","lsn":"'
            for operation in ("insert", "update", "delete")
        }
        self._schema = f'","schema":{encode_basestring(relation.namespace)},"xid":'
        self._key_prefix = self.table + ":"

    # ---- the three parts of an event ----------------------------------------------------
    def payload(self, values: pgoutput.TupleData, toast_as_null: bool) -> tuple[str, list[str]]:
        """The row as a JSON object, and the columns left out as unchanged TOAST.

        `toast_as_null`: a delete's row names every column, null where PostgreSQL sent no
        value; an update's row leaves such a column out (its value is not known here).
        """
        if len(values) != len(self._writers):
            self._refuse(values)
        parts: list[str] = []
        add = parts.append
        unchanged: list[str] = []
        try:
            for field, write, value in zip(self._fields, self._writers, values):  # noqa: B905
                if value.__class__ is str:
                    add(field + write(value))
                elif value is None:
                    add(field + "null")
                elif value is pgoutput.UNCHANGED_TOAST:
                    if toast_as_null:
                        add(field + "null")
                    else:
                        unchanged.append(self._names[self._fields.index(field)])
                else:  # bytes: a binary-format value
                    add(field + json_text(value))
        except (ValueError, KeyError, ArithmeticError):
            self._refuse(values)
        return "{" + ",".join(parts) + "}", unchanged

    def metadata(
        self, operation: str, lsn: int, xid: int | None, unchanged_toast: list[str]
    ) -> str:
        """The metadata object without its commit fields (`contract.mark_commit` adds them)."""
        head = self._heads[operation]
        xid_text = "null" if xid is None else xid
        # lsn as "X/Y" (lsn.lsn_to_str), written inline: this runs once per row change.
        metadata = f"{head}{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}{self._schema}{xid_text}"
        if unchanged_toast:
            metadata += ',"unchanged_toast":' + json_text(unchanged_toast)
        return metadata + "}"

    def key_values(self, values: pgoutput.TupleData) -> tuple[Any, ...]:
        """The primary key's Python values (None for a key column the tuple lacks, or whose
        unchanged TOAST value PostgreSQL did not send)."""
        if len(values) != len(self._writers):
            self._refuse(values)
        try:
            return tuple([_converted(convert, values, index) for index, convert in self._key_plan])
        except (ValueError, KeyError, ArithmeticError):
            self._refuse(values)

    def event(
        self,
        operation: str,
        values: pgoutput.TupleData,
        lsn: int,
        xid: int | None,
        toast_as_null: bool = False,
    ) -> OutgoingEvent:
        """One change event of this table: key `<table>:<pk>`, metadata and payload."""
        payload, unchanged = self.payload(values, toast_as_null)
        key = self._key_prefix + ":".join([str(value) for value in self.key_values(values)])
        return OutgoingEvent(key.encode(), self.metadata(operation, lsn, xid, unchanged), payload)

    # ---- errors: the decoder's own words ----------------------------------------------------
    def _refuse(self, values: pgoutput.TupleData) -> NoReturn:
        """Raise the decoder's error for this tuple: a width that is not the relation's, or the
        column and the text that did not convert."""
        pgoutput.row_to_dict(self.relation, values, self._converters)
        raise pgoutput.PgOutputDecodeError(  # the slow path converted it: a writer is wrong
            f"{self.relation.namespace}.{self.relation.name}: a value did not convert"
        )


def _converted(
    convert: pgoutput.Converter | None, values: pgoutput.TupleData, index: int | None
) -> Any:
    value = None if index is None else values[index]
    if value is pgoutput.UNCHANGED_TOAST:
        return None
    return convert(value) if convert is not None and value.__class__ is str else value
