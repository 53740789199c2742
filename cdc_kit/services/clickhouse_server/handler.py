"""HTTP: who may ask (the lab's one user, checked before the body is read), one request per
chDB call, answers in one write, errors as ClickHouse sends them."""

from __future__ import annotations

import base64
import hmac
import json
import logging
import socket
import socketserver
import ssl
import sys
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from cdc_kit.services.clickhouse_server.engine import (
    Answer,
    ChdbEngine,
)
from cdc_kit.services.clickhouse_server.protocol import (
    AUTHENTICATION_FAILED,
    BAD_ARGUMENTS,
    IDLE_TIMEOUT,
    MAX_BODY_BYTES,
    ONE_WRITE_BYTES,
    QUERY_IS_TOO_LARGE,
    SERVER_NAME,
    STD_EXCEPTION,
    RequestError,
    content_type_of,
)
from cdc_kit.services.clickhouse_server.requests import (
    Request,
    build_request,
    decompress,
)

log = logging.getLogger("cdc_kit.services.clickhouse_server")


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
            if url.path == "/ping" or (not self._has_body() and "query" not in params):
                self._send(200, b"Ok.\n")  # a health check, as ClickHouse: no user needed
                return
            if self.server.credentials is not None:
                # Before the body: a stranger's 256 MiB is never read, let alone decompressed.
                # Their unread body would be parsed as the next request: the connection closes.
                closing = self.close_connection
                self.close_connection = closing or self._has_body()
                self.server.credentials.check(self.headers, params)
                self.close_connection = closing
            body = self._read_body()
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
        chunks: list[bytes] = []
        total = 0
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


class ChdbHTTPServer(ThreadingHTTPServer):
    """A thread per connection; every request shares one ChdbEngine. Closing it frees the folder."""

    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        engine: ChdbEngine,
        credentials: Credentials | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.engine = engine
        self.credentials = credentials
        #: With a context the endpoint speaks HTTPS only (as ClickHouse's https_port does).
        self.tls = tls
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

    def finish_request(self, request: Any, client_address: Any) -> None:
        """Serve one connection; with TLS, shake hands first, in the connection's own thread
        (in accept() a silent client would hold up every other one)."""
        if self.tls is None:
            super().finish_request(request, client_address)
            return
        request.settimeout(IDLE_TIMEOUT)
        with self.tls.wrap_socket(request, server_side=True) as tls_request:
            super().finish_request(tls_request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A failing connection is logged in one line (a traceback for bugs), never fatal."""
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):
            log.debug("connection from %s failed: %s", client_address, exc)
        else:
            log.exception("error on the connection from %s", client_address)
