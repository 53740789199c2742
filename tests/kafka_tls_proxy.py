"""A TLS-terminating Kafka proxy that asks for SASL credentials, in front of a plaintext broker.

The embedded broker (Tansu) neither serves TLS nor can require SASL, yet a cloud cluster does
both. This proxy lets the kit's real clients take the cloud's path on loopback: TLS from the
client to here, SASL on the real wire (SaslHandshake, api key 17, and SaslAuthenticate, 36,
answered here; PLAIN only), then every other request is passed to the broker untouched.
It records each connection's mechanism and user, so a test can see what the client sent.
"""

from __future__ import annotations

import asyncio
import ssl
import struct
import threading
from dataclasses import dataclass, field

SASL_HANDSHAKE = 17
SASL_AUTHENTICATE = 36
API_VERSIONS = 18
#: What this proxy answers for: (api key, min version, max version).
SASL_APIS = ((SASL_HANDSHAKE, 0, 1), (SASL_AUTHENTICATE, 0, 2))
UNSUPPORTED_SASL_MECHANISM = 33
ILLEGAL_SASL_STATE = 34
SASL_AUTHENTICATION_FAILED = 58


def read_uvarint(data: bytes, pos: int) -> tuple[int, int]:
    """An unsigned varint at `pos` -> (value, position after it)."""
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def uvarint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


@dataclass
class Header:
    """A request header (v1, or v2 for flexible versions) and where the body starts."""

    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None
    body: int


def is_flexible(api_key: int, version: int) -> bool:
    """Flexible (tagged-field) versions of the requests the proxy parses itself."""
    return (api_key == SASL_AUTHENTICATE and version >= 2) or (
        api_key == API_VERSIONS and version >= 3
    )


def parse_header(frame: bytes) -> Header:
    api_key, api_version, correlation_id, length = struct.unpack_from(">hhih", frame, 0)
    pos = 10
    client_id = None
    if length >= 0:
        client_id = frame[pos : pos + length].decode()
        pos += length
    if is_flexible(api_key, api_version):
        count, pos = read_uvarint(frame, pos)  # tagged fields of the header
        for _ in range(count):
            _tag, pos = read_uvarint(frame, pos)
            size, pos = read_uvarint(frame, pos)
            pos += size
    return Header(api_key, api_version, correlation_id, client_id, pos)


def with_sasl_apis(response: bytes, version: int) -> bytes:
    """An ApiVersions response that also lists SaslHandshake and SaslAuthenticate, which the
    broker itself does not serve. Response header v0 (correlation id) in every version."""
    (error,) = struct.unpack_from(">h", response, 4)
    if error:
        return response
    flexible = version >= 3
    if flexible:
        count, pos = read_uvarint(response, 6)
        count -= 1
        width = 7  # key, min, max, an empty tagged-field count
    else:
        (count,) = struct.unpack_from(">i", response, 6)
        pos, width = 10, 6
    listed = {struct.unpack_from(">h", response, pos + i * width)[0] for i in range(count)}
    added = b"".join(
        struct.pack(">hhh", key, low, high) + (b"\0" if flexible else b"")
        for key, low, high in SASL_APIS
        if key not in listed
    )
    total = count + len(added) // width
    counted = uvarint(total + 1) if flexible else struct.pack(">i", total)
    return response[:6] + counted + added + response[pos:]


@dataclass
class Login:
    """What one client connection presented."""

    mechanism: str
    user: str
    accepted: bool


@dataclass
class KafkaTlsProxy:
    """Listens with TLS on `port`, forwards to the broker at `broker`; `start()`, `stop()`."""

    broker: tuple[str, int]
    port: int
    context: ssl.SSLContext
    users: dict[str, str]
    host: str = "127.0.0.1"
    logins: list[Login] = field(default_factory=list)
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _server: asyncio.base_events.Server | None = None

    def start(self) -> KafkaTlsProxy:
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()

        async def serve() -> None:
            self._server = await asyncio.start_server(
                self._client, self.host, self.port, ssl=self.context
            )
            ready.set()

        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(serve(), self._loop).result(10)
        ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is None:
            return

        async def close() -> None:
            if self._server is not None:
                self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        self._loop.close()
        self._loop = None

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream: asyncio.StreamWriter | None = None
        try:
            up_reader, upstream = await asyncio.open_connection(*self.broker)
            if await self._authenticate(reader, writer, up_reader, upstream):
                await asyncio.gather(_pipe(reader, upstream), _pipe(up_reader, writer))
        except (OSError, asyncio.IncompleteReadError, ssl.SSLError):
            pass  # a client that went away, or refused our certificate
        finally:
            for end in (writer, upstream):
                if end is not None:
                    end.close()

    async def _authenticate(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        up_reader: asyncio.StreamReader,
        upstream: asyncio.StreamWriter,
    ) -> bool:
        """Answer requests one by one until the client authenticated (then: True)."""
        mechanism = ""
        while True:
            frame = await _read_frame(reader)
            head = parse_header(frame)
            if head.api_key == SASL_HANDSHAKE:
                (length,) = struct.unpack_from(">h", frame, head.body)
                mechanism = frame[head.body + 2 : head.body + 2 + length].decode()
                error = 0 if mechanism == "PLAIN" else UNSUPPORTED_SASL_MECHANISM
                body = struct.pack(">hi", error, 1) + struct.pack(">h", 5) + b"PLAIN"
                await _send(writer, struct.pack(">i", head.correlation_id) + body)
                if error:
                    return False
            elif head.api_key == SASL_AUTHENTICATE:
                token = _auth_bytes(frame, head)
                _authzid, user, password = token.decode().split("\0")
                accepted = mechanism == "PLAIN" and self.users.get(user) == password
                self.logins.append(Login(mechanism, user, accepted))
                await _send(writer, _authenticate_response(head, accepted))
                return accepted
            elif head.api_key == API_VERSIONS or not mechanism:
                upstream.write(struct.pack(">i", len(frame)) + frame)
                await upstream.drain()
                response = await _read_frame(up_reader)
                if head.api_key == API_VERSIONS:
                    response = with_sasl_apis(response, head.api_version)
                await _send(writer, response)
            else:
                return False  # anything else before authenticating: drop the connection


def _auth_bytes(frame: bytes, head: Header) -> bytes:
    if head.api_version >= 2:
        size, pos = read_uvarint(frame, head.body)
        return frame[pos : pos + size - 1]
    (size,) = struct.unpack_from(">i", frame, head.body)
    return frame[head.body + 4 : head.body + 4 + size]


def _authenticate_response(head: Header, accepted: bool) -> bytes:
    error = 0 if accepted else SASL_AUTHENTICATION_FAILED
    message = None if accepted else b"Authentication failed: invalid credentials"
    if head.api_version >= 2:  # response header v1: correlation id, tagged fields
        text = uvarint(0) if message is None else uvarint(len(message) + 1) + message
        body = struct.pack(">h", error) + text + uvarint(1) + struct.pack(">q", 0) + b"\0"
        return struct.pack(">i", head.correlation_id) + b"\0" + body
    text = struct.pack(">h", -1) if message is None else struct.pack(">h", len(message)) + message
    body = struct.pack(">h", error) + text + struct.pack(">i", 0)
    if head.api_version >= 1:
        body += struct.pack(">q", 0)  # session lifetime: none
    return struct.pack(">i", head.correlation_id) + body


async def _read_frame(reader: asyncio.StreamReader) -> bytes:
    (size,) = struct.unpack(">i", await reader.readexactly(4))
    return await reader.readexactly(size)


async def _send(writer: asyncio.StreamWriter, payload: bytes) -> None:
    writer.write(struct.pack(">i", len(payload)) + payload)
    await writer.drain()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()
