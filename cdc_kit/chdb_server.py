"""The embedded ClickHouse: chDB behind (enough of) the ClickHouse HTTP interface.

chDB is ClickHouse as a library, and only one process may open a data folder. Notebooks, the
router and tests are separate processes, so this one server owns the folder and everyone else
uses the official `clickhouse-connect` client (or curl) over HTTP, exactly as against a real
ClickHouse server.

    python -m cdc_kit.chdb_server --host 127.0.0.1 --port 18123 --data-dir .cdc_kit/clickhouse/data

What it speaks (see docs/clickhouse-endpoint.md for the limits):
- GET/POST with the SQL in `?query=`, in the body, or both (the body is appended);
- `param_<name>` for `{name:Type}` placeholders; `database`; every other non-transport URL
  parameter is a ClickHouse setting, applied for that request only;
- the output format from a trailing `FORMAT x`, else `default_format`, else TabSeparated;
- INSERT bodies (`INSERT ... FORMAT Native` + data), compressed as lz4 (several frames),
  zstd, gzip or deflate, plain or chunked;
- errors as ClickHouse sends them: status 500, `Code: N. DB::Exception: ...` as the body, and
  the `X-ClickHouse-Exception-Code` header.

Security: there are no users or passwords, and chDB can read local files with this process's
rights, so bind to 127.0.0.1 only (the stack does).
"""

from __future__ import annotations

import argparse
import email.parser
import email.policy
import gzip
import json
import logging
import re
import signal
import socket
import sys
import threading
import time
import uuid
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import chdb.session
import lz4.frame

log = logging.getLogger("cdc_kit.chdb_server")

#: URL parameters that steer the HTTP exchange rather than the query (never settings).
TRANSPORT_PARAMS = {
    "query", "database", "default_format", "session_id", "session_timeout", "session_check",
    "compress", "decompress", "query_id", "quota_key", "buffer_size", "wait_end_of_query",
    "client_protocol_version", "role", "user", "password", "enable_http_compression",
    "send_progress_in_http_headers", "http_headers_progress_interval_ms",
    "cancel_http_readonly_queries_on_client_close", "http_zlib_compression_level",
}  # fmt: skip
MAX_BODY_BYTES = 1 << 30
_FORMAT_TAIL = re.compile(r"\s+FORMAT\s+([A-Za-z0-9_]+)\s*;?\s*$", re.IGNORECASE)
_INSERT = re.compile(r"^\s*INSERT\s+INTO\s", re.IGNORECASE)
_SETTING_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_NUMBER = re.compile(r"^-?\d+(\.\d+)?$")
_ERROR_CODE = re.compile(r"Code:\s*(\d+)")


class RequestError(Exception):
    """A request we cannot serve; answered like a ClickHouse error."""

    def __init__(self, message: str, code: int = 1, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


# ---- the warehouse: one chDB session, one lock ------------------------------------------------
class Warehouse:
    """Serializes every chDB call (one session per data folder) and scopes per-request state."""

    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.session = chdb.session.Session(str(data_dir))
        self.lock = threading.Lock()
        self.session.query("CREATE DATABASE IF NOT EXISTS local")
        self.timezone = (
            self.session.query("SELECT timezone()", "TabSeparated").bytes().decode().strip()
        )
        self._database = "default"

    def close(self) -> None:
        with self.lock:
            self.session.close()

    def run(
        self,
        sql: str,
        fmt: str,
        database: str | None,
        settings: dict[str, str],
        params: dict[str, str],
        insert_data: bytes | None,
    ) -> tuple[bytes, dict[str, int]]:
        """Run one request's statement; returns the result bytes and a summary."""
        with self.lock:
            self._use(database or "default")
            applied = self._apply_settings(settings)
            try:
                if insert_data is not None:
                    return b"", self._insert(sql, fmt, insert_data)
                result = self.session.query(sql, fmt, params=params or None)
                summary = {
                    "read_rows": result.rows_read(),
                    "read_bytes": result.bytes_read(),
                    "elapsed_ns": int(result.elapsed() * 1e9),
                }
                return result.bytes() or b"", summary
            finally:
                for name in applied:
                    self.session.query(f"SET {name} = DEFAULT")

    def _use(self, database: str) -> None:
        if database != self._database:
            self.session.query(f"USE {_quote_identifier(database)}")
            self._database = database

    def _apply_settings(self, settings: dict[str, str]) -> list[str]:
        applied = []
        for name, value in settings.items():
            if not _SETTING_NAME.match(name):
                raise RequestError(f"Code: 115. DB::Exception: Unknown setting '{name}'", 115)
            literal = (
                value
                if _NUMBER.match(value)
                else "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
            )
            self.session.query(f"SET {name} = {literal}")
            applied.append(name)
        return applied

    def _insert(self, statement: str, fmt: str, data: bytes) -> dict[str, int]:
        inserter = self.session.send_insert(statement, fmt)
        try:
            if data:
                inserter.append(data)
            result = inserter.finish()
        except Exception:
            inserter.cancel()
            raise
        return {"written_rows": int(getattr(result, "rows_written", 0) or 0)}


def _quote_identifier(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


# ---- request decoding -----------------------------------------------------------------
def decompress(body: bytes, encoding: str) -> bytes:
    """Undo Content-Encoding. lz4 bodies are several concatenated frames: decode them all."""
    encoding = encoding.strip().lower()
    if not encoding or encoding == "identity":
        return body
    if encoding == "lz4":
        out = []
        rest = body
        while rest:
            decompressor = lz4.frame.LZ4FrameDecompressor()
            out.append(decompressor.decompress(rest))
            rest = decompressor.unused_data
        return b"".join(out)
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    if encoding == "zstd":
        try:
            from backports import zstd  # type: ignore[import-not-found]
        except ImportError:
            try:
                from compression import zstd  # type: ignore[import-not-found, no-redef]
            except ImportError:
                raise RequestError("zstd request bodies need the backports.zstd package") from None
        return zstd.decompress(body)
    raise RequestError(f"unsupported Content-Encoding {encoding!r}", status=415)


def parse_multipart(content_type: str, body: bytes) -> dict[str, str]:
    """Form fields of a multipart/form-data body (clickhouse-connect's form encoding)."""
    raw = b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(raw)
    fields = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if name:
            fields[str(name)] = part.get_payload(decode=True).decode("utf-8")
    return fields


def split_format(sql: str, default: str) -> tuple[str, str]:
    """Remove a trailing `FORMAT x` and return (sql, format)."""
    match = _FORMAT_TAIL.search(sql)
    if match is None:
        return sql, default
    return sql[: match.start()], match.group(1)


# ---- HTTP ------------------------------------------------------------------------------
class Handler(BaseHTTPRequestHandler):
    """One request -> one chDB call. HTTP/1.1 keep-alive; the whole answer in one write."""

    protocol_version = "HTTP/1.1"
    server_version = "cdc-kit-chdb"
    wbufsize = 1 << 16  # headers and body leave in one send (no Nagle/delayed-ACK stall)
    warehouse: Warehouse  # set by make_server

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # one line per request would drown the log

    def do_HEAD(self) -> None:
        self._reply(200, b"", content_type="text/plain; charset=UTF-8", send_body=False)

    def do_OPTIONS(self) -> None:
        self._reply(204, b"", extra={"Allow": "GET, POST, HEAD, OPTIONS"})

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def _handle(self) -> None:
        url = urlsplit(self.path)
        if url.path not in ("/", "/ping", "/query", ""):
            self._reply(404, b"There is no handle " + url.path.encode() + b"\n")
            return
        try:
            params = dict(parse_qsl(url.query, keep_blank_values=True))
            body = self._read_body()
            if url.path == "/ping" or (not body and "query" not in params):
                self._reply(200, b"Ok.\n")
                return
            self._execute(params, body)
        except RequestError as exc:
            self._error(str(exc), exc.code, exc.status)
        except (ConnectionError, TimeoutError):
            self.close_connection = True
        except Exception as exc:  # noqa: BLE001 - chDB raises plain exceptions for SQL errors
            message = str(exc).strip() or type(exc).__name__
            match = _ERROR_CODE.search(message)
            self._error(message, int(match.group(1)) if match else 1, 500)

    def _read_body(self) -> bytes:
        if self.command != "POST":
            return b""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = self._read_chunked()
        else:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY_BYTES:
                raise RequestError(f"request body of {length} bytes is too large", status=413)
            body = self.rfile.read(length)
            if len(body) < length:
                raise ConnectionError("client closed the connection mid-request")
        return decompress(body, self.headers.get("Content-Encoding", ""))

    def _read_chunked(self) -> bytes:
        chunks = []
        total = 0
        while True:
            size_line = self.rfile.readline(65537)
            if not size_line:
                raise ConnectionError("client closed the connection mid-request")
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(chunks)
            total += size
            if total > MAX_BODY_BYTES:
                raise RequestError("request body is too large", status=413)
            chunks.append(self.rfile.read(size))
            self.rfile.readline(3)  # CRLF after each chunk

    def _execute(self, params: dict[str, str], body: bytes) -> None:
        content_type = self.headers.get("Content-Type", "")
        if content_type.startswith("multipart/form-data"):
            params.update(parse_multipart(content_type, body))
            body = b""
        bind = {k[6:]: v for k, v in params.items() if k.startswith("param_")}
        settings = {
            k: v
            for k, v in params.items()
            if k not in TRANSPORT_PARAMS and not k.startswith("param_")
        }
        default_format = params.get("default_format", "TabSeparated")
        query = params.get("query", "")
        insert_data: bytes | None = None
        if _INSERT.match(query) and _FORMAT_TAIL.search(query):
            statement, fmt = split_format(query, default_format)  # data is the whole body
            insert_data = body
        elif not query and _INSERT.match(body[:200].decode("utf-8", "replace")):
            first_line, _, data = body.partition(b"\n")  # `INSERT ... FORMAT x\n<data>`
            statement, fmt = split_format(first_line.decode("utf-8"), default_format)
            if _FORMAT_TAIL.search(first_line.decode("utf-8")):
                insert_data = data
            else:
                statement, fmt = split_format(body.decode("utf-8"), default_format)
        else:
            sql = query + ("\n" + body.decode("utf-8") if body else "")
            statement, fmt = split_format(sql, default_format)
        began = time.perf_counter()
        data, summary = self.warehouse.run(
            statement, fmt, params.get("database"), settings, bind, insert_data
        )
        summary.setdefault("elapsed_ns", int((time.perf_counter() - began) * 1e9))
        self._reply(
            200,
            data,
            content_type=_content_type(fmt),
            extra={
                "X-ClickHouse-Format": fmt,
                "X-ClickHouse-Summary": json.dumps({k: str(v) for k, v in summary.items()}),
                "X-ClickHouse-Query-Id": params.get("query_id") or str(uuid.uuid4()),
            },
        )

    def _error(self, message: str, code: int, status: int) -> None:
        text = message if message.startswith("Code:") else f"Code: {code}. DB::Exception: {message}"
        self._reply(status, text.encode() + b"\n", extra={"X-ClickHouse-Exception-Code": str(code)})

    def _reply(
        self,
        status: int,
        body: bytes,
        content_type: str = "text/plain; charset=UTF-8",
        extra: dict[str, str] | None = None,
        send_body: bool = True,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-ClickHouse-Server-Display-Name", "cdc-kit-chdb")
        self.send_header("X-ClickHouse-Timezone", self.warehouse.timezone)
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if send_body and body:
            self.wfile.write(body)


def _content_type(fmt: str) -> str:
    if fmt.startswith("JSON"):
        return "application/json; charset=UTF-8"
    if fmt in (
        "Native",
        "RowBinary",
        "RowBinaryWithNamesAndTypes",
        "Arrow",
        "ArrowStream",
        "Parquet",
    ):
        return "application/octet-stream"
    return "text/plain; charset=UTF-8"


def make_server(host: str, port: int, data_dir: Path) -> ThreadingHTTPServer:
    """A threaded HTTP server whose requests share one Warehouse (and its lock)."""
    warehouse = Warehouse(Path(data_dir))
    handler = type("BoundHandler", (Handler,), {"warehouse": warehouse})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    server.warehouse = warehouse  # type: ignore[attr-defined]
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cdc_kit.chdb_server", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=18123)
    parser.add_argument("--data-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    server = make_server(args.host, args.port, args.data_dir)

    def shut_down(*_: Any) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, shut_down)
    signal.signal(signal.SIGINT, shut_down)
    log.info(
        "ClickHouse HTTP interface (chDB) on http://%s:%d, data in %s",
        args.host,
        args.port,
        args.data_dir,
    )
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        server.warehouse.close()  # type: ignore[attr-defined]
        log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
