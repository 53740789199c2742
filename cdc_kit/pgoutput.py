"""A decoder of pgoutput, PostgreSQL's logical replication protocol, as pure functions on bytes.

Every message PostgreSQL sends on a pgoutput slot starts with one type byte:

    B Begin   R Relation (table layout)   I Insert   U Update   D Delete   T Truncate   C Commit
    Y Type    O Origin   M Message        S/E Stream start/stop   c/A Stream commit/abort

Row data arrives as a TupleData: for each column a kind byte, `n` (null), `u` (an unchanged
TOASTed value that was NOT sent — not the same as null!), `t` (text) or `b` (binary).
Relation messages describe the columns; `row_to_dict` turns a tuple into Python values.

Reference: PostgreSQL documentation, "Logical Replication Message Formats".
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any


class PgOutputDecodeError(ValueError):
    """The bytes are not a valid pgoutput message (truncated, unknown type...)."""


class _UnchangedToast:
    """Marker for a TOASTed column PostgreSQL did not send because it did not change."""

    _instance: _UnchangedToast | None = None

    def __new__(cls) -> _UnchangedToast:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNCHANGED_TOAST"

    def __bool__(self) -> bool:
        return False


UNCHANGED_TOAST = _UnchangedToast()

#: Microseconds are counted from PostgreSQL's epoch, 2000-01-01 UTC.
PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)

_I8 = struct.Struct("!b")
_I16 = struct.Struct("!h")
_I32 = struct.Struct("!i")
_U32 = struct.Struct("!I")
_I64 = struct.Struct("!q")
_U64 = struct.Struct("!Q")
_BEGIN = struct.Struct("!QqI")  # final LSN, commit time, xid
_COMMIT = struct.Struct("!bQQq")  # flags, commit LSN, end LSN, commit time
_STREAM_COMMIT = struct.Struct("!IbQQq")  # xid, flags, commit LSN, end LSN, commit time
_COLUMN_TAIL = struct.Struct("!Ii")  # type oid, type modifier


def pg_timestamp(micros: int) -> datetime:
    return PG_EPOCH + timedelta(microseconds=micros)


# ---- messages ------------------------------------------------------------------------
@dataclass(frozen=True)
class Begin:
    final_lsn: int
    commit_ts: datetime
    xid: int


@dataclass(frozen=True)
class Commit:
    flags: int
    commit_lsn: int
    end_lsn: int
    commit_ts: datetime


@dataclass(frozen=True)
class Origin:
    commit_lsn: int
    name: str


@dataclass(frozen=True)
class Column:
    is_key: bool
    name: str
    type_oid: int
    type_modifier: int


@dataclass(frozen=True)
class Relation:
    relid: int
    namespace: str
    name: str
    replica_identity: str  # d (default), f (full), i (index), n (nothing)
    columns: tuple[Column, ...]
    xid: int | None = None


@dataclass(frozen=True)
class TypeMsg:
    type_oid: int
    namespace: str
    name: str
    xid: int | None = None


TupleData = tuple[Any, ...]  # None | UNCHANGED_TOAST | str (text) | bytes (binary)


@dataclass(frozen=True)
class Insert:
    relid: int
    new: TupleData
    xid: int | None = None


@dataclass(frozen=True)
class Update:
    relid: int
    old: TupleData | None
    old_kind: str | None  # "K" old key (key changed), "O" old row (REPLICA IDENTITY FULL)
    new: TupleData
    xid: int | None = None


@dataclass(frozen=True)
class Delete:
    relid: int
    old: TupleData
    old_kind: str  # "K" or "O"
    xid: int | None = None


@dataclass(frozen=True)
class Truncate:
    relids: tuple[int, ...]
    cascade: bool
    restart_identity: bool
    xid: int | None = None


@dataclass(frozen=True)
class Message:
    transactional: bool
    lsn: int
    prefix: str
    content: bytes
    xid: int | None = None


@dataclass(frozen=True)
class StreamStart:
    xid: int
    first_segment: bool


@dataclass(frozen=True)
class StreamStop:
    pass


@dataclass(frozen=True)
class StreamCommit:
    xid: int
    flags: int
    commit_lsn: int
    end_lsn: int
    commit_ts: datetime


@dataclass(frozen=True)
class StreamAbort:
    xid: int
    subxid: int
    abort_lsn: int | None = None
    abort_ts: datetime | None = None


# ---- low-level reading ---------------------------------------------------------------
class _Reader:
    """Reads big-endian fields from a buffer, turning every overrun into PgOutputDecodeError."""

    __slots__ = ("data", "pos", "kind")

    def __init__(self, data: bytes, kind: str) -> None:
        self.data = data
        self.pos = 1  # after the type byte
        self.kind = kind

    def _fail(self, what: str) -> PgOutputDecodeError:
        return PgOutputDecodeError(
            f"{self.kind!r} message: cannot read {what} at offset {self.pos} "
            f"(message is {len(self.data)} bytes)"
        )

    def unpack(self, fmt: struct.Struct, what: str) -> tuple:
        try:
            values = fmt.unpack_from(self.data, self.pos)
        except struct.error:
            raise self._fail(what) from None
        self.pos += fmt.size
        return values

    def int8(self) -> int:
        return self.unpack(_I8, "Int8")[0]

    def int16(self) -> int:
        return self.unpack(_I16, "Int16")[0]

    def int32(self) -> int:
        return self.unpack(_I32, "Int32")[0]

    def uint32(self) -> int:
        return self.unpack(_U32, "UInt32")[0]

    def uint64(self) -> int:
        return self.unpack(_U64, "Int64")[0]

    def int64(self) -> int:
        return self.unpack(_I64, "Int64")[0]

    def byte(self) -> str:
        if self.pos >= len(self.data):
            raise self._fail("Byte1")
        value = chr(self.data[self.pos])
        self.pos += 1
        return value

    def string(self) -> str:
        end = self.data.find(b"\x00", self.pos)
        if end < 0:
            raise self._fail("a null-terminated string")
        value = self.data[self.pos : end].decode("utf-8")
        self.pos = end + 1
        return value

    def raw(self, length: int) -> bytes:
        if length < 0 or self.pos + length > len(self.data):
            raise self._fail(f"{length} bytes")
        value = self.data[self.pos : self.pos + length]
        self.pos += length
        return bytes(value)

    def tuple_data(self) -> TupleData:
        count = self.int16()
        data = self.data
        values: list[Any] = []
        append = values.append
        for _ in range(count):
            if self.pos >= len(data):
                raise self._fail("a column kind")
            kind = data[self.pos]
            self.pos += 1
            if kind == 0x74:  # 't' text
                length = self.int32()
                end = self.pos + length
                if length < 0 or end > len(data):
                    raise self._fail(f"{length} bytes of column text")
                append(data[self.pos : end].decode("utf-8"))
                self.pos = end
            elif kind == 0x6E:  # 'n' null
                append(None)
            elif kind == 0x75:  # 'u' unchanged TOAST
                append(UNCHANGED_TOAST)
            elif kind == 0x62:  # 'b' binary
                append(self.raw(self.int32()))
            else:
                raise PgOutputDecodeError(
                    f"{self.kind!r} message: unknown column kind {chr(kind)!r} "
                    f"at offset {self.pos - 1}"
                )
        return tuple(values)


# ---- message parsers -------------------------------------------------------------------
def _xid(reader: _Reader, in_stream: bool) -> int | None:
    return reader.uint32() if in_stream else None


def _parse_begin(r: _Reader, in_stream: bool, proto: int) -> Begin:
    final_lsn, ts, xid = r.unpack(_BEGIN, "Begin fields")
    return Begin(final_lsn, pg_timestamp(ts), xid)


def _parse_commit(r: _Reader, in_stream: bool, proto: int) -> Commit:
    flags, commit_lsn, end_lsn, ts = r.unpack(_COMMIT, "Commit fields")
    return Commit(flags, commit_lsn, end_lsn, pg_timestamp(ts))


def _parse_origin(r: _Reader, in_stream: bool, proto: int) -> Origin:
    return Origin(r.uint64(), r.string())


def _parse_relation(r: _Reader, in_stream: bool, proto: int) -> Relation:
    xid = _xid(r, in_stream)
    relid = r.uint32()
    namespace = r.string()
    name = r.string()
    identity = r.byte()
    columns = []
    for _ in range(r.int16()):
        flags = r.int8()
        column_name = r.string()
        type_oid, modifier = r.unpack(_COLUMN_TAIL, "column type")
        columns.append(Column(bool(flags & 1), column_name, type_oid, modifier))
    return Relation(relid, namespace, name, identity, tuple(columns), xid)


def _parse_type(r: _Reader, in_stream: bool, proto: int) -> TypeMsg:
    xid = _xid(r, in_stream)
    return TypeMsg(r.uint32(), r.string(), r.string(), xid)


def _parse_insert(r: _Reader, in_stream: bool, proto: int) -> Insert:
    xid = _xid(r, in_stream)
    relid = r.uint32()
    marker = r.byte()
    if marker != "N":
        raise PgOutputDecodeError(f"'I' message: expected 'N' before the new tuple, got {marker!r}")
    return Insert(relid, r.tuple_data(), xid)


def _parse_update(r: _Reader, in_stream: bool, proto: int) -> Update:
    xid = _xid(r, in_stream)
    relid = r.uint32()
    marker = r.byte()
    old = None
    old_kind = None
    if marker in ("K", "O"):
        old_kind = marker
        old = r.tuple_data()
        marker = r.byte()
    if marker != "N":
        raise PgOutputDecodeError(f"'U' message: expected 'N' before the new tuple, got {marker!r}")
    return Update(relid, old, old_kind, r.tuple_data(), xid)


def _parse_delete(r: _Reader, in_stream: bool, proto: int) -> Delete:
    xid = _xid(r, in_stream)
    relid = r.uint32()
    marker = r.byte()
    if marker not in ("K", "O"):
        raise PgOutputDecodeError(f"'D' message: expected 'K' or 'O', got {marker!r}")
    return Delete(relid, r.tuple_data(), marker, xid)


def _parse_truncate(r: _Reader, in_stream: bool, proto: int) -> Truncate:
    xid = _xid(r, in_stream)
    count = r.int32()
    options = r.int8()
    relids = tuple(r.uint32() for _ in range(count))
    return Truncate(relids, bool(options & 1), bool(options & 2), xid)


def _parse_message(r: _Reader, in_stream: bool, proto: int) -> Message:
    xid = _xid(r, in_stream)
    flags = r.int8()
    lsn = r.uint64()
    prefix = r.string()
    content = r.raw(r.int32())
    return Message(bool(flags & 1), lsn, prefix, content, xid)


def _parse_stream_start(r: _Reader, in_stream: bool, proto: int) -> StreamStart:
    return StreamStart(r.uint32(), r.int8() == 1)


def _parse_stream_stop(r: _Reader, in_stream: bool, proto: int) -> StreamStop:
    return StreamStop()


def _parse_stream_commit(r: _Reader, in_stream: bool, proto: int) -> StreamCommit:
    xid, flags, commit_lsn, end_lsn, ts = r.unpack(_STREAM_COMMIT, "Stream Commit fields")
    return StreamCommit(xid, flags, commit_lsn, end_lsn, pg_timestamp(ts))


def _parse_stream_abort(r: _Reader, in_stream: bool, proto: int) -> StreamAbort:
    xid = r.uint32()
    subxid = r.uint32()
    if proto >= 4 and r.pos < len(r.data):  # parallel streaming adds the abort position
        return StreamAbort(xid, subxid, r.uint64(), pg_timestamp(r.int64()))
    return StreamAbort(xid, subxid)


_PARSERS = {
    "B": _parse_begin,
    "C": _parse_commit,
    "O": _parse_origin,
    "R": _parse_relation,
    "Y": _parse_type,
    "I": _parse_insert,
    "U": _parse_update,
    "D": _parse_delete,
    "T": _parse_truncate,
    "M": _parse_message,
    "S": _parse_stream_start,
    "E": _parse_stream_stop,
    "c": _parse_stream_commit,
    "A": _parse_stream_abort,
}

_TWO_PHASE = {
    "b": "Begin Prepare",
    "P": "Prepare",
    "K": "Commit Prepared",
    "r": "Rollback Prepared",
    "p": "Stream Prepare",
}


def decode_message(data: bytes, proto_version: int = 1, in_stream: bool = False) -> Any:
    """Decode one pgoutput message. `in_stream`: inside Stream Start/Stop (xid fields present)."""
    if not data:
        raise PgOutputDecodeError("empty message")
    kind = chr(data[0])
    parser = _PARSERS.get(kind)
    if parser is None:
        if kind in _TWO_PHASE:
            raise PgOutputDecodeError(
                f"{_TWO_PHASE[kind]} ({kind!r}) needs two-phase decoding, "
                "which cdc-kit does not request"
            )
        raise PgOutputDecodeError(f"unknown message type {kind!r}")
    reader = _Reader(data, kind)
    try:
        return parser(reader, in_stream, proto_version)
    except UnicodeDecodeError as exc:
        raise PgOutputDecodeError(
            f"{kind!r} message: invalid UTF-8 at offset {exc.start}"
        ) from None


class Decoder:
    """Decodes a slot's messages in order, tracking stream state and the Relation cache."""

    def __init__(self, proto_version: int = 1) -> None:
        self.proto_version = proto_version
        self.in_stream = False
        self.relations: dict[int, Relation] = {}

    def feed(self, data: bytes) -> Any:
        message = decode_message(data, self.proto_version, self.in_stream)
        if isinstance(message, StreamStart):
            self.in_stream = True
        elif isinstance(message, StreamStop):
            self.in_stream = False
        elif isinstance(message, Relation):
            self.relations[message.relid] = message  # a new one arrives after each DDL
        return message

    def relation(self, relid: int) -> Relation:
        try:
            return self.relations[relid]
        except KeyError:
            raise PgOutputDecodeError(f"no Relation message seen for relid {relid}") from None


# ---- text values -> Python values, by type OID -------------------------------------------
def _to_bool(text: str) -> bool:
    return text == "t"


def _to_bytea(text: str) -> bytes:
    return bytes.fromhex(text[2:]) if text.startswith("\\x") else text.encode()


def _to_numeric(text: str) -> Decimal:
    try:
        return Decimal(text)
    except InvalidOperation:
        raise ValueError(f"not a numeric: {text!r}") from None


def _to_timestamp(text: str) -> datetime | str:
    if text in ("infinity", "-infinity") or text.endswith(" BC"):
        return text  # no Python datetime for these: keep PostgreSQL's words
    return datetime.fromisoformat(text)


def _to_timestamptz(text: str) -> datetime | str:
    value = _to_timestamp(text)
    return value.astimezone(UTC) if isinstance(value, datetime) else value


def _to_date(text: str) -> date | str:
    if text in ("infinity", "-infinity") or text.endswith(" BC"):
        return text
    return date.fromisoformat(text)


def _to_time(text: str) -> time:
    return time.fromisoformat(text)


#: PostgreSQL type OID -> converter from the text form. Unknown types stay text.
CONVERTERS: dict[int, Any] = {
    16: _to_bool,  # bool
    17: _to_bytea,  # bytea
    20: int,  # int8
    21: int,  # int2
    23: int,  # int4
    26: int,  # oid
    114: json.loads,  # json
    3802: json.loads,  # jsonb
    700: float,  # float4 (float() reads NaN and Infinity too)
    701: float,  # float8
    1700: _to_numeric,  # numeric: exact
    1082: _to_date,  # date
    1083: _to_time,  # time
    1114: _to_timestamp,  # timestamp (naive)
    1184: _to_timestamptz,  # timestamptz (aware, UTC)
    # text, varchar, bpchar, name, uuid (2950) stay str: JSON-friendly and exact.
}


def convert_value(type_oid: int, value: Any) -> Any:
    """One column value from its text form; None, UNCHANGED_TOAST and bytes pass through."""
    if value is None or value is UNCHANGED_TOAST or not isinstance(value, str):
        return value
    converter = CONVERTERS.get(type_oid)
    return converter(value) if converter else value


def row_to_dict(relation: Relation, values: TupleData) -> dict[str, Any]:
    """Column name -> Python value for one tuple of `relation`."""
    if len(values) != len(relation.columns):
        raise PgOutputDecodeError(
            f"tuple has {len(values)} columns, relation {relation.name} has {len(relation.columns)}"
        )
    return {
        column.name: convert_value(column.type_oid, value)
        for column, value in zip(relation.columns, values, strict=True)
    }
