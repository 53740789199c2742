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
- `session_id` keeps a client's `SET` and `USE` for later requests of that session only, as
  ClickHouse does (one chDB session serves everyone, so session state is re-applied per request);
- INSERT bodies (`INSERT ... FORMAT Native` + data) compressed as lz4 (several frames), zstd,
  gzip or deflate, with Content-Length or chunked;
- errors as ClickHouse sends them: `Code: N. DB::Exception: ...` as the body, the
  `X-ClickHouse-Exception-Code` header, and ClickHouse's HTTP status for that code.

Security: no user or password is checked. The server binds only to the address it is given
(the stack passes 127.0.0.1), so only local processes reach it, and they could open the data
folder's files anyway. Never bind it to a public address: chDB reads and writes local files
(`file()`, `INTO OUTFILE`) with this process's rights.
"""

from __future__ import annotations

import argparse
import email.parser
import email.policy
import gzip
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
#: Idle keep-alive connections are closed after this many seconds.
IDLE_TIMEOUT = 300
#: ClickHouse's defaults: sessions expire after 60 s idle, at most 3600 s.
SESSION_TIMEOUT, MAX_SESSION_TIMEOUT, MAX_SESSIONS = 60, 3600, 1000
#: chDB's Python-only output formats return objects, not bytes.
CHDB_ONLY_FORMATS = frozenset({"dataframe", "datastore", "arrowtable", "debug"})
SERVER_NAME = "cdc-kit-chdb"

# ClickHouse error codes used here (src/Common/ErrorCodes.cpp).
BAD_ARGUMENTS, NOT_IMPLEMENTED, SYNTAX_ERROR = 36, 48, 62
UNKNOWN_FORMAT, UNKNOWN_SETTING, READONLY, QUERY_IS_TOO_LARGE = 73, 115, 164, 229
CANNOT_DECOMPRESS, SESSION_NOT_FOUND, UNSUPPORTED_MEDIA_TYPE = 271, 372, 779
STD_EXCEPTION = 1001

# HTTP status per error code, as src/Server/HTTP/exceptionCodeToHTTPStatus.cpp maps them
# (503 is left out on purpose: clickhouse-connect would retry it).
_STATUS_BY_CODE = {
    **dict.fromkeys(
        (6, 8, 15, 25, 26, 27, 36, 37, 38, 41, 44, 53, 62, 72, 117, 123, 167, 168, 223, 321, 376,
         427, 441, 675, 676),
        400,
    ),
    **dict.fromkeys((46, 47, 50, 56, 60, 63, 73, 78, 81, 115, 152, 336, 511), 404),
    159: 408, 229: 413, 381: 411, 48: 501, 779: 415,
}  # fmt: skip

_FORMAT_TAIL = re.compile(r"\s+FORMAT\s+([A-Za-z0-9_]+)\s*;?\s*$", re.IGNORECASE)
_FORMAT_NAME = re.compile(r"^[A-Za-z0-9_]+$")
_INSERT = re.compile(r"^\s*INSERT\s+INTO\s", re.IGNORECASE)
_SET = re.compile(r"^\s*SET\s+(?!ROLE\b|DEFAULT\s+ROLE\b|TRANSACTION\b)", re.IGNORECASE)
_USE = re.compile(r"^\s*USE\s", re.IGNORECASE)
_READONLY = re.compile(r"\breadonly\b", re.IGNORECASE)
_SETTING_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ERROR_CODE = re.compile(r"Code:\s*(\d+)")


class RequestError(Exception):
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
        if not text.startswith("Code:"):
            text = f"Code: {self.code}. DB::Exception: {text}"
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


# ---- the engine: one chDB session, one lock ------------------------------------------------------
@dataclass
class ClientSession:
    """What a client's `session_id` keeps between requests: its SETs and its USE."""

    settings: dict[str, str] = field(default_factory=dict)
    database: str | None = None
    expires: float = 0.0


class ChdbEngine:
    """One chDB session shared by every request, behind one lock (chDB is not thread-safe).

    The chDB session's settings and current database are shared state, so each request
    first brings them to what that request asks for (its session's SETs and USE, then its URL
    settings and `database`), changing only what differs from the previous request.
    """

    def __init__(self, data_dir: Path) -> None:
        import chdb.session  # here, not at import: main() sets TZ before chDB starts

        data_dir.mkdir(parents=True, exist_ok=True)
        self.lock = threading.Lock()
        self.closed = False
        self._session = chdb.session.Session(str(data_dir))
        self._database = "default"
        self._applied: dict[str, str] = {}  # settings we changed, and their values now
        self._sessions: OrderedDict[str, ClientSession] = OrderedDict()
        try:
            self._call("CREATE DATABASE IF NOT EXISTS local")  # cdc-kit's warehouse database
            self.timezone = self._scalar("SELECT timezone()")
            self.version = self._scalar("SELECT version()")
            # chDB starts with a few settings changed; resetting one means going back to those.
            self._baseline = self._settings("WHERE changed")
        except BaseException:
            self._session.close()  # release the folder's lock
            raise

    def close(self) -> None:
        """Close the chDB session (waits for a running query) so the folder lock is released."""
        with self.lock:
            if not self.closed:
                self.closed = True
                self._session.close()

    def run(self, request: Request) -> tuple[bytes, dict[str, Any]]:
        """Run one request's statement; returns the result bytes and ClickHouse's summary."""
        with self.lock:
            if self.closed:
                raise RequestError("The server is shutting down", STD_EXCEPTION)
            session = self._client_session(request)
            self._use(request.database or (session and session.database) or "default")
            if _SET.match(request.sql):
                return self._run_set(request.sql, session)
            if _USE.match(request.sql):
                return self._run_use(request.sql, session)
            self._sync_settings({**(session.settings if session else {}), **request.settings})
            if request.insert_data is not None:
                return self._insert(request.sql, request.fmt, request.insert_data)
            return self._query(request)

    # -- statements
    def _query(self, request: Request) -> tuple[bytes, dict[str, Any]]:
        result = self._call(request.sql, request.fmt, request.params)
        data = result.bytes() or b""
        return data, {
            "read_rows": result.rows_read(),
            "read_bytes": result.bytes_read(),
            "written_rows": result.rows_written(),
            "written_bytes": result.bytes_written(),
            "result_bytes": len(data),
            "elapsed_ns": int(result.elapsed() * 1e9),
        }

    def _insert(self, statement: str, fmt: str, data: bytes) -> tuple[bytes, dict[str, Any]]:
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
        return b"", {
            "written_rows": result.rows_written,
            "written_bytes": result.bytes_written,
            "elapsed_ns": int(result.elapsed * 1e9),
        }

    def _run_set(self, sql: str, session: ClientSession | None) -> tuple[bytes, dict[str, Any]]:
        """Run a SET and keep what it changed for its session (none: the next request undoes it)."""
        if _READONLY.search(sql):
            raise RequestError(_READONLY_REFUSAL, READONLY)
        self._sync_settings(dict(session.settings) if session else {})
        before = self._settings()
        self._call(sql)
        changed = {k: v for k, v in self._settings().items() if before.get(k) != v}
        self._applied.update(changed)
        if session:
            session.settings.update(changed)
        return b"", {}

    def _run_use(self, sql: str, session: ClientSession | None) -> tuple[bytes, dict[str, Any]]:
        self._call(sql)
        self._database = self._scalar("SELECT currentDatabase()")
        if session:
            session.database = self._database
        return b"", {}

    # -- shared state
    def _use(self, database: str) -> None:
        if database != self._database:
            self._call(f"USE {quote_identifier(database)}")
            self._database = database

    def _sync_settings(self, wanted: dict[str, str]) -> None:
        """Bring the chDB session to this request's settings, changing only the difference."""
        for name in [name for name in self._applied if name not in wanted]:
            if name in self._baseline:
                self._call(f"SET {name} = {quote_string(self._baseline[name])}")
            else:
                self._call(f"SET {name} = DEFAULT")
            del self._applied[name]
        for name, value in wanted.items():
            if self._applied.get(name) == value:
                continue
            if name.lower() == "readonly":
                raise RequestError(_READONLY_REFUSAL, READONLY)
            if not _SETTING_NAME.match(name):
                raise RequestError(f"Unknown setting '{name}'", UNKNOWN_SETTING)
            self._call(f"SET {name} = {quote_string(value)}")
            self._applied[name] = value

    def _client_session(self, request: Request) -> ClientSession | None:
        """The state kept for `session_id` (created on first use, dropped when idle too long)."""
        if not request.session_id:
            return None
        now = time.monotonic()
        for key in [key for key, kept in self._sessions.items() if kept.expires < now]:
            del self._sessions[key]
        session = self._sessions.get(request.session_id)
        if session is None:
            if request.session_check:
                raise RequestError(f"Session {request.session_id} not found", SESSION_NOT_FOUND)
            session = self._sessions[request.session_id] = ClientSession()
            while len(self._sessions) > MAX_SESSIONS:
                self._sessions.popitem(last=False)
        self._sessions.move_to_end(request.session_id)
        session.expires = now + request.session_timeout
        return session

    # -- chDB calls (run() holds the lock)
    def _call(
        self, sql: str, fmt: str = "TabSeparated", params: dict[str, str] | None = None
    ) -> Any:
        try:
            return self._session.query(sql, fmt, params=params or None)
        except Exception as exc:  # chDB raises ChdbError(RuntimeError) for SQL errors
            raise engine_error(exc) from None

    def _scalar(self, sql: str) -> str:
        return json.loads(self._call(sql, "JSONCompact").bytes())["data"][0][0]

    def _settings(self, where: str = "") -> dict[str, str]:
        """name -> value of the session's settings (read at start and around SET statements)."""
        sql = f"SELECT name, value FROM system.settings {where}"  # noqa: S608 - constant text
        rows = json.loads(self._call(sql, "JSONCompact").bytes())["data"]
        return {name: value for name, value in rows if name != "database"}


_READONLY_REFUSAL = (
    "cdc-kit's embedded ClickHouse cannot apply 'readonly': all clients share one chDB "
    "session and readonly could never be switched off again"
)


def quote_identifier(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def quote_string(value: str) -> str:
    """A ClickHouse string literal; SET accepts one for every setting type."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


# ---- HTTP --------------------------------------------------------------------------------
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
            request = build_request(params, body, self.headers.get("Content-Type", ""))
            data, summary = self.server.engine.run(request)
            self._answer(request, params.get("query_id"), data, summary)
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

    def _answer(
        self, request: Request, query_id: str | None, data: bytes, summary: dict[str, Any]
    ) -> None:
        headers = {
            "X-ClickHouse-Format": request.fmt,
            "X-ClickHouse-Query-Id": query_id or str(uuid.uuid4()),
            "X-ClickHouse-Summary": json.dumps({k: str(v) for k, v in summary.items()}),
        }
        if request.session_id:
            headers["X-ClickHouse-Session-Id"] = request.session_id
        self._send(200, data, headers, content_type=content_type_of(request.fmt))

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
        """Status line, headers and body in ONE write: split writes cost ~40 ms each."""
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
        self.wfile.write(head if head_only else head + body)
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

    def __init__(self, address: tuple[str, int], engine: ChdbEngine) -> None:
        self.engine = engine
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


def make_server(host: str, port: int, data_dir: Path) -> ChdbHTTPServer:
    """Open the chDB folder and bind host:port (port 0 picks one: see server_address).

    `server_close()` also closes the chDB session, which releases the folder's lock.
    """
    engine = ChdbEngine(Path(data_dir))
    try:
        return ChdbHTTPServer((host, port), engine)
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
    try:
        server = make_server(args.host, args.port, args.data_dir)
    except Exception as exc:
        log.error("cannot start: %s", exc)
        return 1
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
