"""From URL parameters and a request body to one statement to run (ClickHouse's HTTP rules):
where the SQL comes from, its output format, INSERT data, settings, the session, and bodies
compressed with lz4 (several frames), zstd, gzip or deflate."""

from __future__ import annotations

import email.parser
import email.policy
import gzip
import io
import logging
import re
import zlib
from dataclasses import dataclass, field
from typing import Any

import lz4.frame

from cdc_kit.services.clickhouse_server.protocol import (
    BAD_ARGUMENTS,
    CANNOT_DECOMPRESS,
    MAX_BODY_BYTES,
    MAX_SESSION_TIMEOUT,
    NOT_IMPLEMENTED,
    QUERY_IS_TOO_LARGE,
    SESSION_TIMEOUT,
    SYNTAX_ERROR,
    TRANSPORT_PARAMS,
    UNKNOWN_FORMAT,
    UNSUPPORTED_MEDIA_TYPE,
    RequestError,
)

log = logging.getLogger("cdc_kit.services.clickhouse_server")


#: chDB's Python-only output formats return objects, not bytes.
CHDB_ONLY_FORMATS = frozenset({"dataframe", "datastore", "arrowtable", "debug"})


_FORMAT_TAIL = re.compile(r"\s+FORMAT\s+([A-Za-z0-9_]+)\s*;?\s*$", re.IGNORECASE)


_FORMAT_NAME = re.compile(r"^[A-Za-z0-9_]+$")


_INSERT = re.compile(r"^\s*INSERT\s+INTO\s", re.IGNORECASE)


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
            payload = part.get_payload(decode=True)
            raw = payload if isinstance(payload, bytes) else str(payload or "").encode()
            fields[str(name)] = raw.decode("utf-8", "replace")
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
    except Exception as exc:  # noqa: BLE001 - each codec raises its own type for corrupt input
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
            from compression import zstd  # type: ignore[no-redef]  # Python 3.14
        except ImportError:
            raise RequestError(
                "zstd request bodies need the backports.zstd package", UNSUPPORTED_MEDIA_TYPE
            ) from None
    return zstd

