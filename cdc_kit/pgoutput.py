"""A decoder of pgoutput, PostgreSQL's logical replication protocol, as pure functions on bytes.

Every message PostgreSQL sends on a pgoutput slot starts with one type byte:

    B Begin   R Relation (table layout)   I Insert   U Update   D Delete   T Truncate   C Commit
    Y Type    O Origin   M Message (pg_logical_emit_message)
    S/E Stream Start/Stop   c/A Stream Commit/Abort            (proto_version >= 2, streaming)
    b/P/K/r Begin Prepare, Prepare, Commit/Rollback Prepared   (proto_version >= 3, two_phase)
    p Stream Prepare                                            (proto_version >= 3)

Row data arrives as a TupleData: for each column a kind byte, `n` (null), `u` (an unchanged
TOASTed value that was NOT sent: `UNCHANGED_TOAST`, never None), `t` (text) or `b` (binary,
only with the `binary` option). Relation messages describe the columns; `row_to_dict` turns a
tuple into Python values.

Inside a streamed transaction (between Stream Start and Stream Stop) Relation, Type, Insert,
Update, Delete, Truncate and Message carry the (sub)transaction's xid right after the type byte,
so decoding depends on that state: `Decoder` tracks it; `decode_message` takes it as argument.

Observed on PostgreSQL 18 (tests/data/pgoutput), worth knowing when consuming this:
- over a replication connection, the XLogData data_start is 0/0 for Relation
  messages and for a Begin that is followed by an Origin; Commit's data_start is its end_lsn;
- REPLICA IDENTITY FULL flags every column as key; a DEFAULT K tuple has only the key columns
  (the rest 'n'); FULL's O tuple carries even the TOAST values the new tuple marks 'u';
- Relations are re-sent without DDL (each session; inside streams, per transaction and after a
  rolled-back savepoint), and streams may contain empty Start/Stop pairs;
- Message.lsn is the end of the message's WAL record, not its start.

Reference: PostgreSQL documentation, "Logical Replication Message Formats".
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from types import MappingProxyType
from typing import Any

from cdc_kit.errors import CdcKitError


class PgOutputDecodeError(CdcKitError, ValueError):
    """The bytes are not a valid pgoutput message (truncated, garbled, unknown type...)."""


class _UnchangedToast:
    """Marker for a TOASTed column PostgreSQL did not send because the update left it unchanged.

    Deliberately not None: None means SQL NULL; this means "value unknown here, keep the old".
    """

    _instance: _UnchangedToast | None = None

    def __new__(cls) -> _UnchangedToast:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNCHANGED_TOAST"

    def __reduce__(self) -> str:
        return "UNCHANGED_TOAST"  # copy/pickle keep the one instance, so `is` still works


UNCHANGED_TOAST = _UnchangedToast()

#: Timestamps on the wire are microseconds since PostgreSQL's epoch, 2000-01-01 UTC.
PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)

#: Highest protocol version this decoder knows (PostgreSQL 16+ offer 4).
MAX_PROTO_VERSION = 4


def pg_timestamp(micros: int) -> datetime:
    """Wire timestamp (microseconds since 2000-01-01 UTC) -> aware UTC datetime."""
    return PG_EPOCH + timedelta(microseconds=micros)


# ---- messages ------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Begin:
    final_lsn: int  # LSN of the commit record (= Commit.commit_lsn)
    commit_ts: datetime
    xid: int


@dataclass(frozen=True, slots=True)
class Commit:
    flags: int
    commit_lsn: int
    end_lsn: int  # the position to confirm to the slot once the transaction is safe
    commit_ts: datetime


@dataclass(frozen=True, slots=True)
class Origin:
    commit_lsn: int  # the commit's LSN on the origin server
    name: str


@dataclass(frozen=True, slots=True)
class Column:
    is_key: bool  # part of the replica identity (every column under REPLICA IDENTITY FULL)
    name: str
    type_oid: int
    type_modifier: int  # atttypmod: -1 when none, e.g. varchar(20) -> 24


TupleData = tuple[Any, ...]  # per column: None | UNCHANGED_TOAST | str (text) | bytes (binary)
Converter = Callable[[str], Any]


@dataclass(frozen=True, slots=True)
class Relation:
    relid: int
    namespace: str  # '' for pg_catalog (PostgreSQL sends the empty string there)
    name: str
    replica_identity: str  # d (default), f (full), i (index), n (nothing)
    columns: tuple[Column, ...]
    xid: int | None = None

    @property
    def key_columns(self) -> tuple[str, ...]:
        """Names of the replica-identity columns (the primary key under DEFAULT)."""
        return tuple(c.name for c in self.columns if c.is_key)


@dataclass(frozen=True, slots=True)
class TypeMsg:
    type_oid: int
    namespace: str
    name: str
    xid: int | None = None


@dataclass(frozen=True, slots=True)
class Insert:
    relid: int
    new: TupleData
    xid: int | None = None  # only inside a stream: the (sub)transaction's xid


@dataclass(frozen=True, slots=True)
class Update:
    relid: int
    old: TupleData | None
    old_kind: str | None  # 'K' old key (identity changed), 'O' old row (REPLICA IDENTITY FULL)
    new: TupleData
    xid: int | None = None


@dataclass(frozen=True, slots=True)
class Delete:
    relid: int
    old: TupleData
    old_kind: str  # 'K' (key columns set, the rest null) or 'O' (FULL: the whole row)
    xid: int | None = None


@dataclass(frozen=True, slots=True)
class Truncate:
    relids: tuple[int, ...]
    cascade: bool
    restart_identity: bool
    xid: int | None = None


@dataclass(frozen=True, slots=True)
class Message:
    transactional: bool
    lsn: int  # observed: the END of the message's WAL record
    prefix: str
    content: bytes
    xid: int | None = None


@dataclass(frozen=True, slots=True)
class StreamStart:
    xid: int
    first_segment: bool


@dataclass(frozen=True, slots=True)
class StreamStop:
    pass


@dataclass(frozen=True, slots=True)
class StreamCommit:
    xid: int
    flags: int
    commit_lsn: int
    end_lsn: int
    commit_ts: datetime


@dataclass(frozen=True, slots=True)
class StreamAbort:
    xid: int  # the top-level transaction
    subxid: int  # == xid when the whole transaction aborted, else the rolled-back subtransaction
    abort_lsn: int | None = None  # proto 4 with streaming=parallel only
    abort_ts: datetime | None = None


@dataclass(frozen=True, slots=True)
class BeginPrepare:
    prepare_lsn: int
    end_lsn: int
    prepare_ts: datetime
    xid: int
    gid: str


@dataclass(frozen=True, slots=True)
class Prepare:
    flags: int
    prepare_lsn: int
    end_lsn: int
    prepare_ts: datetime
    xid: int
    gid: str


@dataclass(frozen=True, slots=True)
class StreamPrepare:
    flags: int
    prepare_lsn: int
    end_lsn: int
    prepare_ts: datetime
    xid: int
    gid: str


@dataclass(frozen=True, slots=True)
class CommitPrepared:
    flags: int
    commit_lsn: int
    end_lsn: int
    commit_ts: datetime
    xid: int
    gid: str


@dataclass(frozen=True, slots=True)
class RollbackPrepared:
    flags: int
    prepare_end_lsn: int
    rollback_end_lsn: int
    prepare_ts: datetime
    rollback_ts: datetime
    xid: int
    gid: str


PgOutputMessage = (
    Begin | Commit | Origin | Relation | TypeMsg | Insert | Update | Delete | Truncate | Message
    | StreamStart | StreamStop | StreamCommit | StreamAbort
    | BeginPrepare | Prepare | StreamPrepare | CommitPrepared | RollbackPrepared
)  # fmt: skip

# ---- low-level reading -------------------------------------------------------------------
_NAMES = {
    "B": "Begin", "C": "Commit", "O": "Origin", "R": "Relation", "Y": "Type", "I": "Insert",
    "U": "Update", "D": "Delete", "T": "Truncate", "M": "Message", "S": "Stream Start",
    "E": "Stream Stop", "c": "Stream Commit", "A": "Stream Abort", "b": "Begin Prepare",
    "P": "Prepare", "K": "Commit Prepared", "r": "Rollback Prepared", "p": "Stream Prepare",
}  # fmt: skip
_U32 = struct.Struct("!I")
_I16 = struct.Struct("!h")
_I32 = struct.Struct("!i")
_RELID_MARKER = struct.Struct("!Ic")  # relation id, then the tuple marker byte
_XID_RELID_MARKER = struct.Struct("!IIc")  # the same inside a stream, after the xid
_COLUMN_TAIL = struct.Struct("!Ii")  # type oid, type modifier
_BEGIN = struct.Struct("!QqI")  # final LSN, commit time, xid
_COMMIT = struct.Struct("!BQQq")  # flags, commit LSN, end LSN, commit time
_ORIGIN = struct.Struct("!Q")
_TRUNCATE = struct.Struct("!iB")  # number of relations, option bits
_MESSAGE = struct.Struct("!BQ")  # flags, LSN
_STREAM_START = struct.Struct("!IB")
_STREAM_COMMIT = struct.Struct("!IBQQq")  # xid, flags, commit LSN, end LSN, commit time
_STREAM_ABORT = struct.Struct("!II")
_STREAM_ABORT_4 = struct.Struct("!IIQq")  # + abort LSN, abort time (streaming=parallel)
_BEGIN_PREPARE = struct.Struct("!QQqI")  # prepare LSN, end LSN, prepare time, xid
_PREPARE = struct.Struct("!BQQqI")  # flags, prepare/commit LSN, end LSN, time, xid
_ROLLBACK_PREPARED = struct.Struct("!BQQqqI")  # flags, 2 end LSNs, prepare + rollback time, xid


def _error(kind: str, pos: int, data: bytes, what: str) -> PgOutputDecodeError:
    name = _NAMES.get(kind, "unknown")
    return PgOutputDecodeError(
        f"{name} ({kind!r}) message: {what} at offset {pos} (message is {len(data)} bytes)"
    )


def _fixed(data: bytes, pos: int, layout: struct.Struct, kind: str, what: str) -> tuple[Any, ...]:
    """Unpack a fixed-size block that must end the message exactly."""
    if len(data) != pos + layout.size:
        raise _error(kind, pos, data, f"expected {layout.size} bytes of {what}")
    return layout.unpack_from(data, pos)


def _need(data: bytes, pos: int, size: int, kind: str, what: str) -> None:
    if pos + size > len(data):
        raise _error(kind, pos, data, f"truncated: cannot read {what} ({size} bytes)")


def _string(data: bytes, pos: int, kind: str, what: str) -> tuple[str, int]:
    """A null-terminated UTF-8 string -> (text, position after the terminator)."""
    end = data.find(b"\x00", pos)
    if end < 0:
        raise _error(kind, pos, data, f"truncated: no end to the string {what}")
    try:
        return data[pos:end].decode(), end + 1
    except UnicodeDecodeError:
        raise _error(kind, pos, data, f"string {what} is not UTF-8") from None


def _end(data: bytes, pos: int, kind: str) -> None:
    """Refuse trailing bytes: they mean a wrong proto_version or stream state, not extra data."""
    if pos != len(data):
        raise _error(kind, pos, data, f"{len(data) - pos} unexpected bytes after the message")


def _xid(data: bytes, in_stream: bool, kind: str) -> tuple[int | None, int]:
    """The streamed-transaction xid that follows the type byte inside a stream."""
    if not in_stream:
        return None, 1
    _need(data, 1, 4, kind, "the streamed transaction's xid")
    return _U32.unpack_from(data, 1)[0], 5


def _tuple(data: bytes, pos: int, kind: str) -> tuple[TupleData, int]:
    """A TupleData -> (values, position after it). The hot path: keep it lean."""
    values: list[Any] = []
    append = values.append
    size = len(data)
    unpack_length = _I32.unpack_from
    start = pos
    try:
        (count,) = _I16.unpack_from(data, pos)
        pos += 2
        for _ in range(count):
            column_kind = data[pos]
            if column_kind == 116:  # 't' text
                (length,) = unpack_length(data, pos + 1)
                start = pos + 5
                pos = start + length
                if not start <= pos <= size:
                    raise _error(kind, start, data, f"truncated: column text of {length} bytes")
                append(data[start:pos].decode())
            elif column_kind == 110:  # 'n' null
                append(None)
                pos += 1
            elif column_kind == 117:  # 'u' unchanged TOAST: no value follows
                append(UNCHANGED_TOAST)
                pos += 1
            elif column_kind == 98:  # 'b' binary (the `binary` option)
                (length,) = unpack_length(data, pos + 1)
                start = pos + 5
                pos = start + length
                if not start <= pos <= size:
                    raise _error(kind, start, data, f"truncated: column value of {length} bytes")
                append(data[start:pos])
            else:
                raise _error(kind, pos, data, f"unknown column kind {chr(column_kind)!r}")
    except (struct.error, IndexError):
        raise _error(kind, pos, data, "truncated tuple data") from None
    except UnicodeDecodeError:
        raise _error(kind, start, data, "column text is not UTF-8") from None
    return tuple(values), pos


def _change_head(data: bytes, in_stream: bool, kind: str) -> tuple[int | None, int, str, int]:
    """(xid, relid, tuple marker, position after it) of an Insert/Update/Delete: one unpack."""
    try:
        if in_stream:
            xid, relid, marker = _XID_RELID_MARKER.unpack_from(data, 1)
            return xid, relid, marker.decode("latin-1"), 10
        relid, marker = _RELID_MARKER.unpack_from(data, 1)
        return None, relid, marker.decode("latin-1"), 6
    except struct.error:
        what = "xid, relation id and tuple marker" if in_stream else "relation id and tuple marker"
        raise _error(kind, 1, data, f"truncated: cannot read {what}") from None


# ---- message parsers: (data, in_stream, proto) -> message ----------------------------------
def _parse_begin(data: bytes, in_stream: bool, proto: int) -> Begin:
    final_lsn, ts, xid = _fixed(data, 1, _BEGIN, "B", "final LSN, commit time, xid")
    return Begin(final_lsn, pg_timestamp(ts), xid)


def _parse_commit(data: bytes, in_stream: bool, proto: int) -> Commit:
    flags, commit_lsn, end_lsn, ts = _fixed(data, 1, _COMMIT, "C", "flags, LSNs, commit time")
    return Commit(flags, commit_lsn, end_lsn, pg_timestamp(ts))


def _parse_origin(data: bytes, in_stream: bool, proto: int) -> Origin:
    _need(data, 1, 8, "O", "the origin's commit LSN")
    (lsn,) = _ORIGIN.unpack_from(data, 1)
    name, pos = _string(data, 9, "O", "origin name")
    _end(data, pos, "O")
    return Origin(lsn, name)


def _parse_relation(data: bytes, in_stream: bool, proto: int) -> Relation:
    xid, pos = _xid(data, in_stream, "R")
    _need(data, pos, 4, "R", "relation id")
    (relid,) = _U32.unpack_from(data, pos)
    namespace, pos = _string(data, pos + 4, "R", "namespace")
    name, pos = _string(data, pos, "R", "relation name")
    _need(data, pos, 3, "R", "replica identity and column count")
    identity = chr(data[pos])
    (count,) = _I16.unpack_from(data, pos + 1)
    pos += 3
    columns = []
    for _ in range(count):
        _need(data, pos, 1, "R", "column flags")
        flags = data[pos]
        column_name, pos = _string(data, pos + 1, "R", "column name")
        _need(data, pos, 8, "R", "column type oid and modifier")
        type_oid, modifier = _COLUMN_TAIL.unpack_from(data, pos)
        pos += 8
        columns.append(Column(bool(flags & 1), column_name, type_oid, modifier))
    _end(data, pos, "R")
    return Relation(relid, namespace, name, identity, tuple(columns), xid)


def _parse_type(data: bytes, in_stream: bool, proto: int) -> TypeMsg:
    xid, pos = _xid(data, in_stream, "Y")
    _need(data, pos, 4, "Y", "type oid")
    (type_oid,) = _U32.unpack_from(data, pos)
    namespace, pos = _string(data, pos + 4, "Y", "namespace")
    name, pos = _string(data, pos, "Y", "type name")
    _end(data, pos, "Y")
    return TypeMsg(type_oid, namespace, name, xid)


def _parse_insert(data: bytes, in_stream: bool, proto: int) -> Insert:
    xid, relid, marker, pos = _change_head(data, in_stream, "I")
    if marker != "N":
        raise _error("I", pos - 1, data, f"expected 'N' before the new tuple, got {marker!r}")
    new, pos = _tuple(data, pos, "I")
    if pos != len(data):
        _end(data, pos, "I")
    return Insert(relid, new, xid)


def _parse_update(data: bytes, in_stream: bool, proto: int) -> Update:
    xid, relid, marker, pos = _change_head(data, in_stream, "U")
    old = old_kind = None
    if marker in ("K", "O"):
        old_kind = marker
        old, pos = _tuple(data, pos, "U")
        _need(data, pos, 1, "U", "the new tuple marker")
        marker = chr(data[pos])
        pos += 1
    if marker != "N":
        raise _error("U", pos - 1, data, f"expected 'K', 'O' or 'N', got {marker!r}")
    new, pos = _tuple(data, pos, "U")
    _end(data, pos, "U")
    return Update(relid, old, old_kind, new, xid)


def _parse_delete(data: bytes, in_stream: bool, proto: int) -> Delete:
    xid, relid, marker, pos = _change_head(data, in_stream, "D")
    if marker not in ("K", "O"):
        raise _error("D", pos - 1, data, f"expected 'K' or 'O', got {marker!r}")
    old, pos = _tuple(data, pos, "D")
    _end(data, pos, "D")
    return Delete(relid, old, marker, xid)


def _parse_truncate(data: bytes, in_stream: bool, proto: int) -> Truncate:
    xid, pos = _xid(data, in_stream, "T")
    _need(data, pos, _TRUNCATE.size, "T", "relation count and options")
    count, options = _TRUNCATE.unpack_from(data, pos)
    pos += _TRUNCATE.size
    if count < 0 or len(data) != pos + 4 * count:
        raise _error("T", pos, data, f"expected {count} relation ids of 4 bytes")
    relids = struct.unpack_from(f"!{count}I", data, pos)
    return Truncate(relids, bool(options & 1), bool(options & 2), xid)


def _parse_message(data: bytes, in_stream: bool, proto: int) -> Message:
    xid, pos = _xid(data, in_stream, "M")
    _need(data, pos, _MESSAGE.size, "M", "flags and LSN")
    flags, lsn = _MESSAGE.unpack_from(data, pos)
    prefix, pos = _string(data, pos + _MESSAGE.size, "M", "prefix")
    _need(data, pos, 4, "M", "content length")
    (length,) = _I32.unpack_from(data, pos)
    pos += 4
    if length < 0 or len(data) != pos + length:
        raise _error("M", pos, data, f"expected {length} bytes of content")
    return Message(bool(flags & 1), lsn, prefix, data[pos:], xid)


def _parse_stream_start(data: bytes, in_stream: bool, proto: int) -> StreamStart:
    xid, first = _fixed(data, 1, _STREAM_START, "S", "xid and first-segment flag")
    return StreamStart(xid, first == 1)


def _parse_stream_stop(data: bytes, in_stream: bool, proto: int) -> StreamStop:
    _end(data, 1, "E")
    return StreamStop()


def _parse_stream_commit(data: bytes, in_stream: bool, proto: int) -> StreamCommit:
    xid, flags, commit_lsn, end_lsn, ts = _fixed(
        data, 1, _STREAM_COMMIT, "c", "xid, flags, LSNs, commit time"
    )
    return StreamCommit(xid, flags, commit_lsn, end_lsn, pg_timestamp(ts))


def _parse_stream_abort(data: bytes, in_stream: bool, proto: int) -> StreamAbort:
    if proto >= 4 and len(data) == 1 + _STREAM_ABORT_4.size:  # streaming=parallel
        xid, subxid, lsn, ts = _STREAM_ABORT_4.unpack_from(data, 1)
        return StreamAbort(xid, subxid, lsn, pg_timestamp(ts))
    xid, subxid = _fixed(data, 1, _STREAM_ABORT, "A", "xid and subtransaction xid")
    return StreamAbort(xid, subxid)


def _prepared(data: bytes, layout: struct.Struct, kind: str) -> tuple[tuple[Any, ...], str]:
    """The fixed fields and the GID that end every two-phase message."""
    _need(data, 1, layout.size, kind, "fixed fields")
    fields = layout.unpack_from(data, 1)
    gid, pos = _string(data, 1 + layout.size, kind, "gid")
    _end(data, pos, kind)
    return fields, gid


def _parse_begin_prepare(data: bytes, in_stream: bool, proto: int) -> BeginPrepare:
    (lsn, end_lsn, ts, xid), gid = _prepared(data, _BEGIN_PREPARE, "b")
    return BeginPrepare(lsn, end_lsn, pg_timestamp(ts), xid, gid)


def _parse_prepare(data: bytes, in_stream: bool, proto: int) -> Prepare:
    (flags, lsn, end_lsn, ts, xid), gid = _prepared(data, _PREPARE, "P")
    return Prepare(flags, lsn, end_lsn, pg_timestamp(ts), xid, gid)


def _parse_stream_prepare(data: bytes, in_stream: bool, proto: int) -> StreamPrepare:
    (flags, lsn, end_lsn, ts, xid), gid = _prepared(data, _PREPARE, "p")
    return StreamPrepare(flags, lsn, end_lsn, pg_timestamp(ts), xid, gid)


def _parse_commit_prepared(data: bytes, in_stream: bool, proto: int) -> CommitPrepared:
    (flags, lsn, end_lsn, ts, xid), gid = _prepared(data, _PREPARE, "K")
    return CommitPrepared(flags, lsn, end_lsn, pg_timestamp(ts), xid, gid)


def _parse_rollback_prepared(data: bytes, in_stream: bool, proto: int) -> RollbackPrepared:
    (flags, prep_end, end_lsn, prep_ts, ts, xid), gid = _prepared(data, _ROLLBACK_PREPARED, "r")
    return RollbackPrepared(
        flags, prep_end, end_lsn, pg_timestamp(prep_ts), pg_timestamp(ts), xid, gid
    )


#: type byte -> (parser, lowest proto_version that can send it)
_PARSERS: dict[int, tuple[Callable[[bytes, bool, int], PgOutputMessage], int]] = {
    ord("B"): (_parse_begin, 1),
    ord("C"): (_parse_commit, 1),
    ord("O"): (_parse_origin, 1),
    ord("R"): (_parse_relation, 1),
    ord("Y"): (_parse_type, 1),
    ord("I"): (_parse_insert, 1),
    ord("U"): (_parse_update, 1),
    ord("D"): (_parse_delete, 1),
    ord("T"): (_parse_truncate, 1),
    ord("M"): (_parse_message, 1),
    ord("S"): (_parse_stream_start, 2),
    ord("E"): (_parse_stream_stop, 2),
    ord("c"): (_parse_stream_commit, 2),
    ord("A"): (_parse_stream_abort, 2),
    ord("b"): (_parse_begin_prepare, 3),
    ord("P"): (_parse_prepare, 3),
    ord("K"): (_parse_commit_prepared, 3),
    ord("r"): (_parse_rollback_prepared, 3),
    ord("p"): (_parse_stream_prepare, 3),
}


def _check_proto(proto_version: int) -> None:
    if not 1 <= proto_version <= MAX_PROTO_VERSION:
        raise ValueError(f"proto_version must be 1..{MAX_PROTO_VERSION}, not {proto_version!r}")


def decode_message(
    data: bytes | bytearray | memoryview, proto_version: int = 1, in_stream: bool = False
) -> PgOutputMessage:
    """Decode one pgoutput message (one XLogData payload, or one `data` row of the SQL API).

    `proto_version` is the one requested from the slot; `in_stream` says whether the message
    sits between Stream Start and Stop (then the changes carry an xid). Raises
    PgOutputDecodeError for anything truncated, garbled, unknown, or impossible at this version.
    """
    if type(data) is not bytes:
        data = bytes(data)
    if not data:
        raise PgOutputDecodeError("empty message: no type byte")
    entry = _PARSERS.get(data[0])
    if entry is None:
        raise PgOutputDecodeError(f"unknown message type {chr(data[0])!r} at offset 0")
    parser, since = entry
    if not since <= proto_version <= MAX_PROTO_VERSION:
        _check_proto(proto_version)
        kind = chr(data[0])
        raise PgOutputDecodeError(
            f"{_NAMES[kind]} ({kind!r}) message needs proto_version >= {since}, "
            f"but the decoder was told {proto_version}"
        )
    try:
        return parser(data, in_stream, proto_version)
    except OverflowError:  # a timestamp no datetime can hold: garbled bytes
        kind = chr(data[0])
        raise _error(kind, 1, data, "timestamp out of range") from None


class Decoder:
    """Decodes one slot's messages in order: tracks stream state and caches Relations.

    PostgreSQL sends a Relation before the first change of each table in a session, again after
    DDL on it, and again inside streams; the newest one for a relid wins.
    """

    def __init__(
        self, proto_version: int = 1, converters: Mapping[int, Converter] | None = None
    ) -> None:
        """`converters`: type OID -> converter, added to (or replacing) DEFAULT_CONVERTERS for
        this decoder only, as a psycopg connection extends its adapters without touching
        anyone else's."""
        _check_proto(proto_version)
        self.proto_version = proto_version
        self.converters: dict[int, Converter] = {**DEFAULT_CONVERTERS, **(converters or {})}
        self.in_stream = False
        self.stream_xid: int | None = None  # top-level xid of the open stream segment
        self.relations: dict[int, Relation] = {}
        self.types: dict[int, TypeMsg] = {}
        self._plans: dict[int, Plan] = {}  # relid -> its conversion plan, made once

    def feed(self, data: bytes | bytearray | memoryview) -> PgOutputMessage:
        """Decode the next message and update the stream state and the Relation cache."""
        message = decode_message(data, self.proto_version, self.in_stream)
        if type(message) is Relation:
            self.relations[message.relid] = message
            self._plans[message.relid] = conversion_plan(message, self.converters)
        elif type(message) is StreamStart:
            if self.in_stream:
                raise PgOutputDecodeError(
                    f"Stream Start for xid {message.xid} inside the stream of {self.stream_xid}"
                )
            self.in_stream, self.stream_xid = True, message.xid
        elif type(message) is StreamStop:
            if not self.in_stream:
                raise PgOutputDecodeError("Stream Stop without a Stream Start")
            self.in_stream, self.stream_xid = False, None
        elif type(message) is TypeMsg:
            self.types[message.type_oid] = message
        return message

    def relation(self, relid: int) -> Relation:
        """The newest Relation seen for `relid`."""
        try:
            return self.relations[relid]
        except KeyError:
            raise PgOutputDecodeError(
                f"no Relation message seen for relid {relid} (PostgreSQL sends one before the "
                "first change of each table in a session: was an earlier message skipped?)"
            ) from None

    def row(self, relid: int, values: TupleData) -> dict[str, Any]:
        """Column name -> Python value for one tuple, with this decoder's converters."""
        relation = self.relation(relid)
        return _convert(relation, self._plans[relid], values, self.converters)


# ---- text values -> Python values, by type OID -------------------------------------------
_BOOLS = {"t": True, "f": False}
_BYTEA_ESCAPE = re.compile(rb"\\(\\|[0-3][0-7]{2})")


def _to_bool(text: str) -> bool:
    return _BOOLS[text]


def _to_bytea(text: str) -> bytes:
    """bytea in the hex format (the default, '\\x..') or the old escape format."""
    if text.startswith("\\x"):
        return bytes.fromhex(text[2:])
    return _BYTEA_ESCAPE.sub(
        lambda m: b"\\" if m[1] == b"\\" else bytes([int(m[1], 8)]), text.encode("ascii")
    )


def _python_cannot_hold(text: str) -> bool:
    """infinity, -infinity, BC dates and years after 9999 have no datetime/date."""
    # startswith, not text[0]: an empty (garbled) value must reach fromisoformat and be
    # reported as a decode error, not raise IndexError here.
    return text.startswith(("i", "-")) or text.endswith(" BC") or text[:5].isdigit()


def _to_timestamp(text: str) -> datetime | str:
    return text if _python_cannot_hold(text) else datetime.fromisoformat(text)


def _to_timestamptz(text: str) -> datetime | str:
    if _python_cannot_hold(text):
        return text
    return datetime.fromisoformat(text).astimezone(UTC)


def _to_date(text: str) -> date | str:
    return text if _python_cannot_hold(text) else date.fromisoformat(text)


def _to_time(text: str) -> time | str:
    return text if text.startswith("24:") else time.fromisoformat(text)  # 24:00:00 is legal


#: PostgreSQL type OID -> converter from the text output form (DateStyle ISO). Types not listed
#: stay text: text, varchar, bpchar, name, uuid (str: exact and JSON-ready), arrays, interval...
#: Read-only: a Decoder copies it and takes additions of its own (`Decoder(converters=...)`).
DEFAULT_CONVERTERS: Mapping[int, Converter] = MappingProxyType({
    16: _to_bool,  # bool
    17: _to_bytea,  # bytea
    20: int,  # int8
    21: int,  # int2
    23: int,  # int4
    26: int,  # oid
    114: json.loads,  # json (a JSON null becomes None, like SQL NULL)
    3802: json.loads,  # jsonb
    700: float,  # float4 (float() reads NaN, Infinity, -Infinity)
    701: float,  # float8
    1700: Decimal,  # numeric: exact; NaN, Infinity, -Infinity too
    1082: _to_date,  # date
    1083: _to_time,  # time
    1114: _to_timestamp,  # timestamp -> naive datetime
    1184: _to_timestamptz,  # timestamptz -> aware datetime in UTC
})

#: (column name, converter or None) per column of a relation.
Plan = tuple[tuple[str, Converter | None], ...]


def conversion_plan(relation: Relation, converters: Mapping[int, Converter]) -> Plan:
    """Each column's converter, looked up once per Relation so each row stays cheap."""
    return tuple((column.name, converters.get(column.type_oid)) for column in relation.columns)


def convert_value(
    type_oid: int, value: Any, converters: Mapping[int, Converter] = DEFAULT_CONVERTERS
) -> Any:
    """One column value from its text form; None, UNCHANGED_TOAST and bytes pass through."""
    if value.__class__ is not str:
        return value
    converter = converters.get(type_oid)
    return converter(value) if converter else value


def row_to_dict(
    relation: Relation, values: TupleData, converters: Mapping[int, Converter] = DEFAULT_CONVERTERS
) -> dict[str, Any]:
    """Column name -> Python value for one tuple of `relation` (see DEFAULT_CONVERTERS).

    None (NULL) and UNCHANGED_TOAST pass through unchanged, and so do binary ('b') values.
    A Decoder's `row()` does the same with the decoder's own converters and cached plans.
    """
    return _convert(relation, conversion_plan(relation, converters), values, converters)


def _convert(
    relation: Relation, plan: Plan, values: TupleData, converters: Mapping[int, Converter]
) -> dict[str, Any]:
    if len(values) != len(plan):
        raise PgOutputDecodeError(
            f"tuple has {len(values)} columns, relation {relation.namespace}.{relation.name} "
            f"has {len(plan)}: is the Relation for relid {relation.relid} out of date?"
        )
    try:
        return {
            name: value if convert is None or value.__class__ is not str else convert(value)
            for (name, convert), value in zip(plan, values, strict=True)
        }
    except (ValueError, KeyError, ArithmeticError) as exc:
        raise _conversion_error(relation, values, converters) from exc


def _conversion_error(
    relation: Relation, values: TupleData, converters: Mapping[int, Converter]
) -> PgOutputDecodeError:
    """Find the column whose text did not convert, and say which and why."""
    for column, value in zip(relation.columns, values, strict=True):
        try:
            convert_value(column.type_oid, value, converters)
        except (ValueError, KeyError, ArithmeticError) as exc:
            return PgOutputDecodeError(
                f"{relation.namespace}.{relation.name}.{column.name} (type oid "
                f"{column.type_oid}): cannot convert {value[:80]!r}: {exc!r}"
            )
    return PgOutputDecodeError(f"{relation.namespace}.{relation.name}: a value did not convert")
