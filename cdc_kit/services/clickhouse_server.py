"""The embedded ClickHouse: chDB behind (enough of) the ClickHouse HTTP interface.

chDB is ClickHouse as a library, and only one process may open a data folder. Notebooks, the
router and tests are separate processes, so this one server owns the folder and everyone else
uses the official `clickhouse-connect` client (or curl) over HTTP, as against a real server.

    python -m cdc_kit.services.clickhouse_server --port 18123 --data-dir .cdc_kit/clickhouse/data

What it speaks (docs/clickhouse-endpoint.md lists the limits):
- `GET /ping` and `GET /` answer `Ok.`; SQL comes from `?query=`, the body, or both (the body is
  appended, as ClickHouse does); output format from a trailing `FORMAT x`, else
  `default_format`, else TabSeparated;
- `param_<name>` fills `{name:Type}` placeholders; `database` picks the current database per
  request; every other non-transport URL parameter is a ClickHouse setting for that request;
- `session_id` gives a client a chDB connection of its own: its `SET`, `USE` and temporary
  tables last for its later requests and no one else's, and a second request while one runs is
  refused (SESSION_IS_LOCKED), as in ClickHouse; requests of different sessions run at once;
- statements without rows (DDL, INSERT) answer without `X-ClickHouse-Format`, so
  clickhouse-connect's `command()` returns a QuerySummary, as from ClickHouse;
- INSERT bodies (`INSERT ... FORMAT Native` + data) compressed as lz4 (several frames), zstd,
  gzip or deflate, with Content-Length or chunked;
- errors as ClickHouse sends them: `Code: N. DB::Exception: ...` as the body, the
  `X-ClickHouse-Exception-Code` header, and ClickHouse's HTTP status for that code. Results are
  built whole before they are sent, so a query failing midway never answers with part of its rows.

Security: no user or password is checked. The server binds only to the address it is given
(the stack passes 127.0.0.1), so only local processes reach it, and they could open the data
folder's files anyway. Never bind it to a public address: chDB reads and writes local files
(`file()`, `INTO OUTFILE`) with this process's rights.
"""

from __future__ import annotations

import argparse
import base64
import ctypes
import email.parser
import email.policy
import gzip
import hmac
import importlib.util
import io
import json
import logging
import os
import re
import signal
import socket
import socketserver
import sys
import threading
import time
import uuid
import zlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import lz4.frame

from cdc_kit.errors import CdcKitError

log = logging.getLogger("cdc_kit.services.clickhouse_server")

#: URL parameters that steer the HTTP exchange, never applied as settings.
TRANSPORT_PARAMS = frozenset({
    "query", "database", "default_format", "session_id", "session_timeout", "session_check",
    "compress", "decompress", "query_id", "quota_key", "buffer_size", "wait_end_of_query",
    "client_protocol_version", "role", "user", "password", "enable_http_compression",
    "send_progress_in_http_headers", "http_headers_progress_interval_ms",
    "cancel_http_readonly_queries_on_client_close", "http_zlib_compression_level",
    "http_native_compression_disable_checksumming_on_decompress",
})  # fmt: skip
#: Largest request body, before and after decompression (100k rows of a wide table ~ 10 MB).
MAX_BODY_BYTES = 256 << 20
#: Answers up to this size leave in one write with their headers.
ONE_WRITE_BYTES = 1 << 20
#: Idle keep-alive connections are closed after this many seconds.
IDLE_TIMEOUT = 300
#: ClickHouse's defaults: sessions expire after 60 s idle, at most 3600 s.
SESSION_TIMEOUT, MAX_SESSION_TIMEOUT = 60, 3600
#: Each session holds a chDB connection (~0.1 MB); beyond this many the least recently used
#: idle session is closed.
MAX_SESSIONS = 100
#: chDB's Python-only output formats return objects, not bytes.
CHDB_ONLY_FORMATS = frozenset({"dataframe", "datastore", "arrowtable", "debug"})
SERVER_NAME = "cdc-kit-chdb"
#: Cache sizes for the chDB engine (ClickHouse server settings, bytes). ClickHouse sizes its
#: caches for a server with many GB (5 GiB of marks); the kit's tables are small, so these
#: caps cost no speed and keep the lab inside Binder's 2 GB.
ENGINE_SETTINGS = {
    "mark_cache_size": 64 << 20,
    "primary_index_cache_size": 64 << 20,
    "index_mark_cache_size": 16 << 20,
    "query_condition_cache_size": 16 << 20,
    "compiled_expression_cache_size": 16 << 20,
}
#: Memory all queries together may use; beyond it a query fails with MEMORY_LIMIT_EXCEEDED
#: (code 241) instead of the whole lab being killed for lack of memory.
MAX_MEMORY_MB = 1024
#: Connections kept open for requests without a session_id.
MAX_IDLE_CONNECTIONS = 4
MADV_PAGEOUT = 21  # linux/mman.h

# ClickHouse error codes used here (src/Common/ErrorCodes.cpp).
BAD_ARGUMENTS, NOT_IMPLEMENTED, SYNTAX_ERROR = 36, 48, 62
UNKNOWN_FORMAT, UNKNOWN_SETTING, READONLY, QUERY_IS_TOO_LARGE = 73, 115, 164, 229
CANNOT_DECOMPRESS, SESSION_NOT_FOUND, SESSION_IS_LOCKED, UNSUPPORTED_MEDIA_TYPE = 271, 372, 373, 779
AUTHENTICATION_FAILED = 516
STD_EXCEPTION = 1001
_ERROR_NAMES = {
    BAD_ARGUMENTS: "BAD_ARGUMENTS", NOT_IMPLEMENTED: "NOT_IMPLEMENTED",
    SYNTAX_ERROR: "SYNTAX_ERROR", UNKNOWN_FORMAT: "UNKNOWN_FORMAT",
    UNKNOWN_SETTING: "UNKNOWN_SETTING", READONLY: "READONLY",
    QUERY_IS_TOO_LARGE: "QUERY_IS_TOO_LARGE", CANNOT_DECOMPRESS: "CANNOT_DECOMPRESS",
    SESSION_NOT_FOUND: "SESSION_NOT_FOUND", SESSION_IS_LOCKED: "SESSION_IS_LOCKED",
    UNSUPPORTED_MEDIA_TYPE: "UNSUPPORTED_MEDIA_TYPE", STD_EXCEPTION: "STD_EXCEPTION",
    AUTHENTICATION_FAILED: "AUTHENTICATION_FAILED",
}  # fmt: skip

# HTTP status per error code, as src/Server/HTTP/exceptionCodeToHTTPStatus.cpp maps them
# (503 is left out on purpose: clickhouse-connect would retry it).
_STATUS_BY_CODE = {
    **dict.fromkeys(
        (6, 8, 15, 25, 26, 27, 36, 37, 38, 41, 44, 53, 62, 72, 117, 123, 167, 168, 223, 321, 376,
         427, 441, 675, 676),
        400,
    ),
    **dict.fromkeys((46, 47, 50, 56, 60, 63, 73, 78, 81, 115, 152, 336, 511), 404),
    159: 408, 229: 413, 381: 411, 48: 501, 779: 415, 192: 401, 193: 401, 194: 401, 516: 401,
}  # fmt: skip

_FORMAT_TAIL = re.compile(r"\s+FORMAT\s+([A-Za-z0-9_]+)\s*;?\s*$", re.IGNORECASE)
_FORMAT_NAME = re.compile(r"^[A-Za-z0-9_]+$")
_INSERT = re.compile(r"^\s*INSERT\s+INTO\s", re.IGNORECASE)
_SET = re.compile(r"^\s*SET\s+(?!ROLE\b|DEFAULT\s+ROLE\b|TRANSACTION\b)", re.IGNORECASE)
_USE = re.compile(r"^\s*USE\s", re.IGNORECASE)
_READONLY = re.compile(r"\breadonly\b", re.IGNORECASE)
_SETTING_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ERROR_CODE = re.compile(r"Code:\s*(\d+)")
_TEMPORARY = re.compile(r"\bTEMPORARY\b", re.IGNORECASE)
# Statements whose answer is a result set (ClickHouse: a pipeline that outputs rows), after
# any leading comments or brackets.
_RESULT_STATEMENT = re.compile(
    r"^(?:\s+|--[^\n]*(?:\n|$)|#[^\n]*(?:\n|$)|/\*.*?\*/|\()*"
    r"(?:SELECT|WITH|FROM|SHOW|DESC|DESCRIBE|EXISTS|EXPLAIN|CHECK|KILL|WATCH|BACKUP|RESTORE)\b",
    re.IGNORECASE | re.DOTALL,
)


class RequestError(CdcKitError):
    """A request we cannot serve, answered like a ClickHouse error.

    `close` says the connection must be dropped (the body was not read to its end).
    """

    def __init__(self, message: str, code: int, status: int | None = None, close: bool = False):
        super().__init__(message)
        self.code = code
        self.status = status or _STATUS_BY_CODE.get(code, 500)
        self.close = close

    def body(self) -> bytes:
        text = str(self)
        if not text.startswith("Code:"):  # ours: shaped like ClickHouse's, its name at the end
            name = _ERROR_NAMES.get(self.code)
            text = f"Code: {self.code}. DB::Exception: {text}" + (f" ({name})" if name else "")
        return text.encode("utf-8", "replace") + b"\n"


def engine_error(exc: BaseException) -> RequestError:
    """chDB's exception text (`... Code: 62. DB::Exception: ...`) as a RequestError."""
    message = str(exc).strip() or type(exc).__name__
    start = message.find("Code:")
    if start > 0:
        message = message[start:]  # drop chDB's "Streaming insert finish failed: " prefix
    match = _ERROR_CODE.match(message)
    return RequestError(message, int(match.group(1)) if match else STD_EXCEPTION)


# ---- requests ----------------------------------------------------------------------------
@dataclass
class Request:
    """One statement to run, decoded from the URL parameters and the body."""

    sql: str
    fmt: str = "TabSeparated"
    insert_data: bytes | None = None  # INSERT ... FORMAT x: the data to stream in
    params: dict[str, str] = field(default_factory=dict)  # {name:Type} values
    settings: dict[str, str] = field(default_factory=dict)
    database: str | None = None
    session_id: str | None = None
    session_timeout: float = SESSION_TIMEOUT
    session_check: bool = False


def build_request(params: dict[str, str], body: bytes, content_type: str = "") -> Request:
    """Turn URL parameters and a decoded body into a Request (ClickHouse's HTTP rules)."""
    params = dict(params)
    if content_type.lower().startswith("multipart/form-data"):
        params.update(parse_multipart(content_type, body))
        body = b""
    for flag in ("compress", "decompress"):
        if params.get(flag, "0") not in ("", "0"):
            raise RequestError(
                f"{flag}=1 (ClickHouse's own compressed format) is not served by cdc-kit's "
                "embedded ClickHouse; use HTTP compression (Content-Encoding) instead",
                NOT_IMPLEMENTED,
            )
    default_format = params.get("default_format") or "TabSeparated"
    sql, fmt, data = split_statement(params.get("query", ""), body, default_format)
    check_format(fmt)
    return Request(
        sql=sql,
        fmt=fmt,
        insert_data=data,
        params={k[6:]: v for k, v in params.items() if k.startswith("param_")},
        settings={
            k: v
            for k, v in params.items()
            if k not in TRANSPORT_PARAMS and not k.startswith("param_")
        },
        database=params.get("database") or None,
        session_id=params.get("session_id") or None,
        session_timeout=parse_session_timeout(params.get("session_timeout")),
        session_check=params.get("session_check", "0") not in ("", "0"),
    )


def split_statement(query: str, body: bytes, default_format: str) -> tuple[str, str, bytes | None]:
    """(sql, format, insert data or None). The body is data only after `INSERT ... FORMAT x`."""
    if query and _INSERT.match(query) and _FORMAT_TAIL.search(query):
        sql, fmt = split_format(query, default_format)
        return sql, fmt, body
    if not query and _INSERT.match(body[:1000].decode("utf-8", "replace")):
        head, newline, rest = body.partition(b"\n")  # clickhouse-connect: `INSERT ... FORMAT x\n`
        first = _decode_sql(head)
        if newline and _FORMAT_TAIL.search(first):
            sql, fmt = split_format(first, default_format)
            return sql, fmt, rest
    text = query + ("\n" if query and body else "") + _decode_sql(body)
    sql, fmt = split_format(text, default_format)
    return sql, fmt, None


def split_format(sql: str, default: str) -> tuple[str, str]:
    """Remove a trailing `FORMAT x` and return (sql, format)."""
    match = _FORMAT_TAIL.search(sql)
    if match is None:
        return sql, default
    return sql[: match.start()], match.group(1)


def check_format(fmt: str) -> None:
    """Refuse names that are not ClickHouse formats (chDB's DataFrame etc. return objects)."""
    if not _FORMAT_NAME.match(fmt) or fmt.lower() in CHDB_ONLY_FORMATS:
        raise RequestError(f"Unknown output format {fmt}", UNKNOWN_FORMAT)


def parse_session_timeout(value: str | None) -> float:
    if not value:
        return SESSION_TIMEOUT
    try:
        seconds = float(value)
    except ValueError:
        raise RequestError(f"Invalid session timeout: '{value}'", BAD_ARGUMENTS) from None
    if not 0 <= seconds <= MAX_SESSION_TIMEOUT:
        raise RequestError(
            f"Session timeout {value} is larger than max_session_timeout", BAD_ARGUMENTS
        )
    return seconds


def _decode_sql(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise RequestError("The query is not valid UTF-8", SYNTAX_ERROR) from None


def parse_multipart(content_type: str, body: bytes) -> dict[str, str]:
    """Form fields of a multipart/form-data body (`form_encode_query_params=True`)."""
    raw = b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(raw)
    if not message.is_multipart():
        raise RequestError("Malformed multipart/form-data body", BAD_ARGUMENTS)
    fields = {}
    for part in message.iter_parts():
        if part.get_filename():
            raise RequestError(
                "External data (files sent with a query) is not served by cdc-kit's embedded "
                "ClickHouse; insert the data into a table first",
                NOT_IMPLEMENTED,
            )
        name = part.get_param("name", header="content-disposition")
        if name:
            payload = part.get_payload(decode=True) or b""
            fields[str(name)] = payload.decode("utf-8", "replace")
    return fields


def decompress(body: bytes, encoding: str, limit: int = MAX_BODY_BYTES) -> bytes:
    """Undo Content-Encoding, refusing more than `limit` bytes of output.

    lz4 and zstd bodies from clickhouse-connect are several concatenated frames (one per
    block): the stream readers below decode every frame, not just the first.
    """
    encoding = encoding.strip().lower()
    if encoding in ("", "identity", "none"):
        return body
    try:
        if encoding == "lz4":
            data = _read_limited(lz4.frame.LZ4FrameFile(io.BytesIO(body)), limit)
        elif encoding == "zstd":
            data = _read_limited(_zstd().ZstdFile(io.BytesIO(body)), limit)
        elif encoding in ("gzip", "x-gzip"):
            data = _read_limited(gzip.GzipFile(fileobj=io.BytesIO(body)), limit)
        elif encoding == "deflate":
            data = _inflate(body, limit)
        else:
            raise RequestError(
                f"Unknown Content-Encoding {encoding!r} (lz4, zstd, gzip or deflate)",
                UNSUPPORTED_MEDIA_TYPE,
            )
    except RequestError:
        raise
    except Exception as exc:  # each codec raises its own error type for corrupt input
        raise RequestError(
            f"Cannot decompress the {encoding} request body: {exc}", CANNOT_DECOMPRESS
        ) from None
    return data


def _read_limited(stream: io.RawIOBase | io.BufferedIOBase, limit: int) -> bytes:
    with stream:
        data = stream.read(limit + 1)
    if len(data) > limit:
        raise RequestError(f"The request body is larger than {limit} bytes", QUERY_IS_TOO_LARGE)
    return data


def _inflate(body: bytes, limit: int) -> bytes:
    """HTTP 'deflate' is zlib-wrapped, but some clients send raw deflate: accept both."""
    wbits = zlib.MAX_WBITS if body[:1] == b"\x78" else -zlib.MAX_WBITS
    inflater = zlib.decompressobj(wbits)
    data = inflater.decompress(body, limit + 1)
    if len(data) > limit:
        raise RequestError(f"The request body is larger than {limit} bytes", QUERY_IS_TOO_LARGE)
    return data + inflater.flush()


def _zstd() -> Any:
    try:
        from backports import zstd  # clickhouse-connect's own dependency on Python < 3.14
    except ImportError:
        try:
            from compression import zstd  # type: ignore[import-not-found, no-redef]
        except ImportError:
            raise RequestError(
                "zstd request bodies need the backports.zstd package", UNSUPPORTED_MEDIA_TYPE
            ) from None
    return zstd


# ---- the engine: chDB connections, one per client session ------------------------------------
@dataclass
class Answer:
    """What one statement gave back: its bytes, ClickHouse's summary, and whether it made a
    result set (ClickHouse then names the format; clickhouse-connect's command() reads that)."""

    data: bytes = b""
    summary: dict[str, str] = field(default_factory=dict)
    is_result_set: bool = False


def make_summary(
    read_rows: int = 0,
    read_bytes: int = 0,
    written_rows: int = 0,
    written_bytes: int = 0,
    result_bytes: int = 0,
    elapsed: float = 0.0,
) -> dict[str, str]:
    """The X-ClickHouse-Summary fields this server knows (ClickHouse sends them as strings)."""
    return {
        "read_rows": str(read_rows),
        "read_bytes": str(read_bytes),
        "written_rows": str(written_rows),
        "written_bytes": str(written_bytes),
        "result_bytes": str(result_bytes),
        "elapsed_ns": str(int(elapsed * 1e9)),
    }


def returns_rows(sql: str) -> bool:
    """Does the statement make a result set (perhaps empty), rather than just do something?"""
    return _RESULT_STATEMENT.match(sql) is not None


@dataclass
class ClientSession:
    """A client's `session_id`: a chDB connection of its own, so its SETs, USE and temporary
    tables stay its own; `busy` while one of its requests runs (a second one is refused)."""

    connection: ChdbConnection | None = None
    busy: bool = False
    timeout: float = SESSION_TIMEOUT
    expires: float = 0.0


class ChdbConnection:
    """One chDB connection and the state this server gave it.

    chDB keeps settings, the current database and temporary tables per connection. URL
    settings and `database` last one request, so each request first brings the connection to
    what it asks for (its session's SETs and USE, then its URL settings), changing only what
    differs from the previous request on this connection.
    """

    def __init__(self, session: Any, baseline: dict[str, str]) -> None:
        self._session = session
        self._baseline = baseline  # settings chDB starts with changed; resetting goes back there
        self._database = "default"
        self._applied: dict[str, str] = {}  # settings we changed, and their values now
        self.kept_settings: dict[str, str] = {}  # its client session's SETs
        self.kept_database: str | None = None  # and USE

    def close(self) -> None:
        self._session.close()

    def run(self, request: Request) -> Answer:
        """Run one request's statement on this connection (never two at once)."""
        keep = request.session_id is not None
        self.use(request.database or self.kept_database or "default")
        if _SET.match(request.sql):
            return self._run_set(request.sql, keep)
        if _USE.match(request.sql):
            return self._run_use(request.sql, keep)
        self._sync_settings({**self.kept_settings, **request.settings})
        if request.insert_data is not None:
            return self._insert(request.sql, request.fmt, request.insert_data)
        return self._query(request)

    # -- statements
    def _query(self, request: Request) -> Answer:
        # The whole result is built before the first byte is sent: a query that fails midway
        # answers with its error, never with the rows it had made so far.
        result = self.call(request.sql, request.fmt, request.params)
        data = result.bytes() or b""
        summary = make_summary(
            read_rows=result.rows_read(),
            read_bytes=result.bytes_read(),
            written_rows=result.rows_written(),
            written_bytes=result.bytes_written(),
            result_bytes=len(data),
            elapsed=result.elapsed(),
        )
        return Answer(data, summary, is_result_set=bool(data) or returns_rows(request.sql))

    def _insert(self, statement: str, fmt: str, data: bytes) -> Answer:
        began = time.perf_counter()  # chDB's own insert `elapsed` adds up over the connection
        try:
            inserter = self._session.send_insert(statement, fmt)
        except Exception as exc:  # chDB raises RuntimeError for SQL errors
            raise engine_error(exc) from None
        try:
            if data:
                inserter.append(data)
            result = inserter.finish()
        except Exception as exc:
            try:
                inserter.cancel()
            except Exception:  # noqa: S110 - the insert error below is the one to report
                pass
            raise engine_error(exc) from None
        summary = make_summary(
            written_rows=result.rows_written,
            written_bytes=result.bytes_written,
            elapsed=time.perf_counter() - began,
        )
        return Answer(b"", summary)

    def _run_set(self, sql: str, keep: bool) -> Answer:
        """Run a SET; keep what it changed for its session (none: the next request undoes it)."""
        if _READONLY.search(sql):
            raise RequestError(_READONLY_REFUSAL, READONLY)
        self._sync_settings(dict(self.kept_settings))
        before = self.settings()
        self.call(sql)
        changed = {k: v for k, v in self.settings().items() if before.get(k) != v}
        self._applied.update(changed)
        if keep:
            self.kept_settings.update(changed)
        return Answer(b"", make_summary())

    def _run_use(self, sql: str, keep: bool) -> Answer:
        self.call(sql)
        self._database = self.scalar("SELECT currentDatabase()")
        if keep:
            self.kept_database = self._database
        return Answer(b"", make_summary())

    # -- connection state
    def use(self, database: str) -> None:
        if database != self._database:
            self.call(f"USE {quote_identifier(database)}")
            self._database = database

    def _sync_settings(self, wanted: dict[str, str]) -> None:
        """Bring the connection to this request's settings, changing only the difference."""
        for name in [name for name in self._applied if name not in wanted]:
            if name in self._baseline:
                self.call(f"SET {name} = {quote_string(self._baseline[name])}")
            else:
                self.call(f"SET {name} = DEFAULT")
            del self._applied[name]
        for name, value in wanted.items():
            if self._applied.get(name) == value:
                continue
            if name.lower() == "readonly":
                raise RequestError(_READONLY_REFUSAL, READONLY)
            if not _SETTING_NAME.match(name):
                raise RequestError(f"Unknown setting '{name}'", UNKNOWN_SETTING)
            self.call(f"SET {name} = {quote_string(value)}")
            self._applied[name] = value

    # -- chDB calls
    def call(
        self, sql: str, fmt: str = "TabSeparated", params: dict[str, str] | None = None
    ) -> Any:
        try:
            return self._session.query(sql, fmt, params=params or None)
        except Exception as exc:  # chDB raises ChdbError(RuntimeError) for SQL errors
            self._discard_leftover()
            raise engine_error(exc) from None

    def _discard_leftover(self) -> None:
        """chDB 4.4 keeps the output a failed query had already made and puts it in front of
        the next answer on this connection (measured: 370 kB before `SELECT 1`'s `1`).
        One throwaway query takes it."""
        try:
            self._session.query("SELECT 1", "TabSeparated")
        except Exception:  # noqa: S110 - nothing to take, or the connection is gone
            pass

    def scalar(self, sql: str) -> str:
        return json.loads(self.call(sql, "JSONCompact").bytes())["data"][0][0]

    def settings(self, where: str = "") -> dict[str, str]:
        """name -> value of the connection's settings (read at start and around SETs)."""
        sql = f"SELECT name, value FROM system.settings {where}"  # noqa: S608 - constant text
        rows = json.loads(self.call(sql, "JSONCompact").bytes())["data"]
        return {name: value for name, value in rows if name != "database"}


class ChdbEngine:
    """The chDB engine over one data folder, lending a connection to each request.

    A client `session_id` gets a connection of its own, as a ClickHouse session owns its
    context; a second request of that session while one runs is refused (SESSION_IS_LOCKED).
    Requests without a session borrow a pooled connection, and a connection that made a
    temporary table is closed after the request, since the table belongs to that request only.
    Different connections run their queries at the same time.
    """

    def __init__(self, data_dir: Path, max_memory_mb: int = MAX_MEMORY_MB) -> None:
        import chdb.session  # here, not at import: main() sets TZ before chDB starts

        if "?" in str(data_dir):
            raise ValueError(f"the data folder's path must not contain '?': {data_dir}")
        data_dir.mkdir(parents=True, exist_ok=True)
        engine = {**ENGINE_SETTINGS, "max_server_memory_usage": max_memory_mb << 20}
        self._address = f"{data_dir}?" + "&".join(f"{k}={v}" for k, v in engine.items())
        self._connect_chdb = chdb.session.Session
        self._lock = threading.Lock()
        self._returned = threading.Condition(self._lock)
        self.closed = False
        self._idle: list[ChdbConnection] = []  # for requests without a session
        self._sessions: OrderedDict[str, ClientSession] = OrderedDict()
        self._in_use = 0
        # The first connection holds the folder until close(): chDB lets it go with the last one.
        self._anchor = ChdbConnection(self._connect_chdb(self._address), {})
        try:
            self._anchor.call("CREATE DATABASE IF NOT EXISTS local")  # cdc-kit's warehouse database
            self.timezone = self._anchor.scalar("SELECT timezone()")
            self.version = self._anchor.scalar("SELECT version()")
            self._baseline = self._anchor.settings("WHERE changed")
        except BaseException:
            self._anchor.close()  # release the folder's lock
            raise

    def close(self, timeout: float = 10.0) -> None:
        """Close every connection, waiting for running requests, so the folder is released."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            idle = self._idle + [
                kept.connection
                for kept in self._sessions.values()
                if kept.connection is not None and not kept.busy
            ]
            self._idle = []
            self._sessions.clear()  # busy ones close their connection when they return it
        for connection in idle:
            connection.close()
        with self._lock:
            self._returned.wait_for(lambda: self._in_use == 0, timeout)
        self._anchor.close()

    def run(self, request: Request) -> Answer:
        """Run one request's statement on the connection of its session (or a pooled one)."""
        connection, session = self._borrow(request)
        reusable = session is not None or not _TEMPORARY.search(request.sql)
        try:
            return connection.run(request)
        finally:
            self._give_back(connection, session, reusable)

    def _borrow(self, request: Request) -> tuple[ChdbConnection, ClientSession | None]:
        with self._lock:
            if self.closed:
                raise RequestError("The server is shutting down", STD_EXCEPTION)
            now = time.monotonic()
            for key in [key for key, kept in self._sessions.items() if kept.expires < now]:
                self._drop_session(key)  # idle too long: its connection and tables go
            session = self._client_session(request, now)
            if session is not None:
                connection = session.connection
            else:
                connection = self._idle.pop() if self._idle else None
            self._in_use += 1
        if connection is None:
            try:
                connection = ChdbConnection(self._connect_chdb(self._address), self._baseline)
            except BaseException as exc:
                self._give_back(None, session, reusable=False)
                raise engine_error(exc) from None
            if session is not None:
                session.connection = connection
        return connection, session

    def _give_back(
        self, connection: ChdbConnection | None, session: ClientSession | None, reusable: bool
    ) -> None:
        with self._lock:
            self._in_use -= 1
            if session is not None:
                session.busy = False
                session.expires = time.monotonic() + session.timeout
                if not self.closed:
                    connection = None  # it stays with its session
            elif connection is not None and reusable and not self.closed:
                if len(self._idle) < MAX_IDLE_CONNECTIONS:
                    self._idle.append(connection)
                    connection = None
            self._returned.notify_all()
        if connection is not None:
            connection.close()

    def _client_session(self, request: Request, now: float) -> ClientSession | None:
        """The session of `session_id` (made on first use), now marked busy; None without a
        session_id. Runs under the lock."""
        if not request.session_id:
            return None
        session = self._sessions.get(request.session_id)
        if session is None:
            if request.session_check:
                raise RequestError(f"Session {request.session_id} not found", SESSION_NOT_FOUND)
            session = self._sessions[request.session_id] = ClientSession()
            for key in list(self._sessions)[: max(0, len(self._sessions) - MAX_SESSIONS)]:
                self._drop_session(key)  # the longest unused go first
        elif session.busy:
            raise RequestError(
                f"Session {request.session_id} is locked by a concurrent client.",
                SESSION_IS_LOCKED,
            )
        self._sessions.move_to_end(request.session_id)
        session.busy = True
        session.timeout = request.session_timeout
        session.expires = now + session.timeout
        return session

    def _drop_session(self, key: str) -> None:
        session = self._sessions[key]
        if session.busy:
            return  # a running request keeps it
        del self._sessions[key]
        if session.connection is not None:
            session.connection.close()


_READONLY_REFUSAL = (
    "cdc-kit's embedded ClickHouse cannot apply 'readonly': chDB could never switch it off "
    "again on the connection that serves the request"
)


def quote_identifier(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def quote_string(value: str) -> str:
    """A ClickHouse string literal; SET accepts one for every setting type."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


# ---- HTTP --------------------------------------------------------------------------------
# ---- who may ask -------------------------------------------------------------------------
@dataclass(frozen=True)
class Credentials:
    """The one user this endpoint serves (a lab's own); None on the server: anyone may ask."""

    user: str
    password: str

    @classmethod
    def from_file(cls, path: Path) -> Credentials:
        """From a lab file (`clickhouse_user`, `clickhouse_password`), readable by its owner."""
        lab = json.loads(Path(path).read_text())
        return cls(str(lab["clickhouse_user"]), str(lab["clickhouse_password"]))

    def check(self, headers: Any, params: dict[str, str]) -> None:
        """Accept what clickhouse-connect and curl send, as ClickHouse does: HTTP basic auth,
        the X-ClickHouse-User/Key headers, or `user`/`password` URL parameters."""
        user, password = params.get("user"), params.get("password")
        if headers.get("X-ClickHouse-User"):
            user, password = headers.get("X-ClickHouse-User"), headers.get("X-ClickHouse-Key", "")
        auth = headers.get("Authorization", "")
        if auth[:6].lower() == "basic ":
            try:
                user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                user = password = None
        given = f"{user or 'default'}\0{password or ''}".encode()
        if not hmac.compare_digest(given, f"{self.user}\0{self.password}".encode()):
            raise RequestError(
                f"{user or 'default'}: Authentication failed: password is incorrect, or there "
                "is no user with such name.",
                AUTHENTICATION_FAILED,
            )


class Handler(BaseHTTPRequestHandler):
    """One request -> one chDB call. HTTP/1.1 keep-alive; every answer leaves in one write."""

    protocol_version = "HTTP/1.1"
    server_version = SERVER_NAME
    timeout = IDLE_TIMEOUT  # idle keep-alive connections (one thread each) do not live forever
    server: ChdbHTTPServer

    def setup(self) -> None:
        super().setup()
        # No Nagle: with delayed ACKs a small answer waited ~40 ms (measured).
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        found = urlsplit(self.path).path in ("/", "/ping")
        self._send(200 if found else 404, b"Ok.\n" if found else b"", head_only=True)

    def do_OPTIONS(self) -> None:
        self._send(204, b"", {"Allow": "GET, POST, HEAD, OPTIONS"})

    def _handle(self) -> None:
        url = urlsplit(self.path)
        if url.path not in ("/", "/ping"):
            # An unread body would be parsed as the next request: drop the connection instead.
            self.close_connection = self.close_connection or self._has_body()
            message = f"There is no handle {url.path}\n\nUse / or /ping.\n"
            self._send(404, message.encode("utf-8", "replace"))
            return
        try:
            params = dict(parse_qsl(url.query, keep_blank_values=True))
            body = self._read_body()
            if url.path == "/ping" or (not body and "query" not in params):
                self._send(200, b"Ok.\n")
                return
            if self.server.credentials is not None:
                self.server.credentials.check(self.headers, params)
            request = build_request(params, body, self.headers.get("Content-Type", ""))
            answer = self.server.engine.run(request)
            self._answer(request, params.get("query_id"), answer)
        except RequestError as exc:
            log.debug("request failed: %s", exc)
            self.close_connection = self.close_connection or exc.close
            self._error(exc)
        except OSError as exc:  # the client went away or stalled: nobody to answer
            log.debug("connection dropped: %s", exc)
            self.close_connection = True
        except Exception as exc:  # a bug here, not an SQL error: log it, answer, keep serving
            log.exception("unexpected error serving %s", self.path[:200])
            self._error(RequestError(f"{type(exc).__name__}: {exc}", STD_EXCEPTION))

    def _answer(self, request: Request, query_id: str | None, answer: Answer) -> None:
        """200 with ClickHouse's headers. Like ClickHouse, name the format only for a result
        set: clickhouse-connect's command() then returns the rows, else a QuerySummary."""
        headers = {
            "X-ClickHouse-Query-Id": query_id or str(uuid.uuid4()),
            "X-ClickHouse-Summary": json.dumps(answer.summary),
        }
        content_type = "text/plain; charset=UTF-8"
        if answer.is_result_set:
            headers["X-ClickHouse-Format"] = request.fmt
            content_type = content_type_of(request.fmt)
        if request.session_id:
            headers["X-ClickHouse-Session-Id"] = request.session_id
        self._send(200, answer.data, headers, content_type=content_type)

    def _error(self, exc: RequestError) -> None:
        try:
            self._send(exc.status, exc.body(), {"X-ClickHouse-Exception-Code": str(exc.code)})
        except OSError:
            self.close_connection = True

    # -- body
    def _has_body(self) -> bool:
        chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        return chunked or self.headers.get("Content-Length", "0").strip() not in ("", "0")

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            body = self._read_chunked()
        else:
            body = self._read_exactly(self._content_length())
        return decompress(body, self.headers.get("Content-Encoding", ""))

    def _content_length(self) -> int:
        raw = self.headers.get("Content-Length", "0").strip() or "0"
        if not raw.isdigit():
            raise RequestError(f"Invalid Content-Length: {raw!r}", BAD_ARGUMENTS, close=True)
        length = int(raw)
        if length > MAX_BODY_BYTES:
            raise RequestError(
                f"The request body ({length} bytes) is larger than {MAX_BODY_BYTES} bytes",
                QUERY_IS_TOO_LARGE,
                close=True,
            )
        return length

    def _read_exactly(self, length: int) -> bytes:
        data = self.rfile.read(length) if length else b""
        if len(data) < length:
            raise ConnectionError("the client closed the connection mid-request")
        return data

    def _read_chunked(self) -> bytes:
        chunks, total = [], 0
        while True:
            line = self.rfile.readline(1026)
            if not line:
                raise ConnectionError("the client closed the connection mid-request")
            try:
                size = int(line.split(b";")[0].strip(), 16)
            except ValueError:
                raise RequestError("Malformed chunked body", BAD_ARGUMENTS, close=True) from None
            if size == 0:
                while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(chunks)
            total += size
            if total > MAX_BODY_BYTES:
                raise RequestError(
                    f"The request body is larger than {MAX_BODY_BYTES} bytes",
                    QUERY_IS_TOO_LARGE,
                    close=True,
                )
            chunks.append(self._read_exactly(size))
            self.rfile.readline(3)  # the CRLF after each chunk

    # -- answer
    def _send(
        self,
        status: int,
        body: bytes,
        headers: dict[str, str] | None = None,
        content_type: str = "text/plain; charset=UTF-8",
        head_only: bool = False,
    ) -> None:
        """Status line, headers and a small body in ONE write: split writes of small answers
        cost ~40 ms each. A large body follows in its own write rather than as a copy."""
        reason = self.responses.get(status, ("",))[0]
        lines = [
            f"{self.protocol_version} {status} {reason}",
            f"Date: {self.date_time_string()}",
            f"Server: {SERVER_NAME}",
            f"Content-Type: {content_type}",
            f"Content-Length: {len(body)}",
            f"Connection: {'close' if self.close_connection else 'Keep-Alive'}",
            f"X-ClickHouse-Server-Display-Name: {SERVER_NAME}",
            f"X-ClickHouse-Timezone: {self.server.engine.timezone}",
        ]
        if not self.close_connection:
            lines.append(f"Keep-Alive: timeout={IDLE_TIMEOUT}")
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")
        if head_only:
            self.wfile.write(head)
        elif len(body) <= ONE_WRITE_BYTES:
            self.wfile.write(head + body)
        else:
            self.wfile.write(head)
            self.wfile.write(body)
        self.log_request(status, len(body))


def content_type_of(fmt: str) -> str:
    """The Content-Type ClickHouse sends for an output format."""
    name = fmt.lower()
    if name.startswith("json"):
        return "application/json; charset=UTF-8"
    if name.startswith(("tabseparated", "tsv")):
        return "text/tab-separated-values; charset=UTF-8"
    if name.startswith("csv"):
        return "text/csv; charset=UTF-8; header=absent"
    if name.startswith(("native", "rowbinary", "arrow", "parquet", "orc", "avro", "protobuf")):
        return "application/octet-stream"
    return "text/plain; charset=UTF-8"


class ChdbHTTPServer(ThreadingHTTPServer):
    """A thread per connection; every request shares one ChdbEngine. Closing it frees the folder."""

    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], engine: ChdbEngine, credentials: Credentials | None = None
    ) -> None:
        self.engine = engine
        self.credentials = credentials
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, Handler)

    def server_bind(self) -> None:
        """Bind without HTTPServer's getfqdn() reverse lookup (seconds on a broken resolver)."""
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]

    def server_close(self) -> None:
        super().server_close()
        self.engine.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A failing connection is logged in one line (a traceback for bugs), never fatal."""
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):
            log.debug("connection from %s failed: %s", client_address, exc)
        else:
            log.exception("error on the connection from %s", client_address)


# ---- memory --------------------------------------------------------------------------------
def release_startup_pages() -> int:
    """Hand back the pages of chDB's library that only its start-up read; MB advised.

    Loading chDB runs ClickHouse's start-up code across its 550 MB library, and ~250 MB of it
    stays resident though queries never use it again. MADV_PAGEOUT (Linux 5.4+) lets the
    kernel drop those unchanged file pages now; whatever a query needs is read back on first
    use. Only read-only mappings are advised. Elsewhere, or on older kernels, nothing happens.
    """
    if not sys.platform.startswith("linux"):
        return 0
    library = importlib.util.find_spec("chdb._chdb")
    if library is None or not library.origin:
        return 0
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    advised = 0
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            if len(fields) < 6 or fields[5].strip() != library.origin or "w" in fields[1]:
                continue
            start, end = (int(address, 16) for address in fields[0].split("-"))
            if libc.madvise(start, end - start, MADV_PAGEOUT) != 0:
                return 0  # EINVAL: this kernel has no MADV_PAGEOUT
            advised += end - start
    return advised >> 20


def make_server(
    host: str,
    port: int,
    data_dir: Path,
    max_memory_mb: int = MAX_MEMORY_MB,
    credentials: Credentials | None = None,
) -> ChdbHTTPServer:
    """Open the chDB folder and bind host:port (port 0 picks one: see server_address).

    `server_close()` also closes the chDB connections, which releases the folder's lock.
    """
    engine = ChdbEngine(Path(data_dir), max_memory_mb)
    try:
        return ChdbHTTPServer((host, port), engine, credentials)
    except BaseException:
        engine.close()
        raise


def _on_signal(server: ChdbHTTPServer) -> Callable[[int, Any], None]:
    def stop(signum: int, _frame: Any) -> None:
        log.info("%s received, stopping", signal.Signals(signum).name)
        # shutdown() waits for serve_forever() to return: it must not run on the main thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    return stop


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cdc_kit.services.clickhouse_server",
        description="chDB behind the ClickHouse HTTP interface (for clickhouse-connect and curl)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=18123, help="0 picks a free port")
    parser.add_argument("--data-dir", type=Path, required=True, help="chDB data folder")
    parser.add_argument(
        "--max-memory-mb",
        type=int,
        default=MAX_MEMORY_MB,
        help=f"memory all queries together may use (default {MAX_MEMORY_MB})",
    )
    parser.add_argument(
        "--credentials-file",
        type=Path,
        help="a lab file with clickhouse_user/clickhouse_password: only that user is served",
    )
    parser.add_argument("--log-level", default="INFO", help="DEBUG logs every request")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    # UTC like the docker stack's ClickHouse, whatever the learner's laptop uses. chDB reads
    # TZ once, when it is first imported (in ChdbEngine), so this must come first.
    os.environ["TZ"] = "UTC"
    if hasattr(time, "tzset"):
        time.tzset()
    # chDB imports pyarrow (and numpy) for DataFrame and Arrow-table results, which this server
    # never returns (it sends ClickHouse's own formats, Arrow included, as bytes); chDB treats
    # pyarrow as optional, so leaving it out of this process saves ~65 MB.
    sys.modules.setdefault("pyarrow", None)  # type: ignore[arg-type]
    try:
        credentials = None
        if args.credentials_file is not None:
            credentials = Credentials.from_file(args.credentials_file)
        server = make_server(args.host, args.port, args.data_dir, args.max_memory_mb, credentials)
    except Exception as exc:
        log.error("cannot start: %s", exc)
        return 1
    advised = release_startup_pages()
    log.debug("asked the kernel to drop chDB's start-up pages (%d MB of mappings)", advised)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _on_signal(server))
    host, port = server.server_address[:2]
    version = server.engine.version
    log.info("listening on http://%s:%d (chDB %s, data in %s)", host, port, version, args.data_dir)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
