"""What the ClickHouse HTTP interface promises, as this server keeps it: the URL parameters that
steer the exchange, the limits, ClickHouse's error codes and HTTP statuses, the shape of an
error, and the Content-Type of each output format."""

from __future__ import annotations

import logging
import re

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


SERVER_NAME = "cdc-kit-chdb"


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


_ERROR_CODE = re.compile(r"Code:\s*(\d+)")


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


def quote_identifier(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def quote_string(value: str) -> str:
    """A ClickHouse string literal; SET accepts one for every setting type."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


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

