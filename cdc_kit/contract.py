"""The message contract between capture and router: build, serialise and parse change events.

Every change event on the topic looks like this (our capture and Redpanda Connect agree)::

    key:   b"customer:1"   (<table>:<primary key>, so one row's changes stay in order)
    value: {"metadata": {"table": "customer", "operation": "update", "lsn": "0/1A2B3C4", ...},
            "payload":  {"id": 1, "email": "jane@example.com", ...}}

`build_event` makes one (capture, snapshot, tests), `OutgoingEvent.encode` serialises it and
`parse_event` turns the bytes back into a `ChangeEvent`, or raises `EventParseError` whose
message says exactly what is wrong: that message is what a dead letter records.
`CdcMetadata` and `CdcEvent` describe the same contract as Pydantic models, for people and docs.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from cdc_kit.lsn import lsn_to_str, str_to_lsn

Operation = Literal["read", "insert", "update", "delete", "truncate"]
OPERATIONS: tuple[str, ...] = ("read", "insert", "update", "delete", "truncate")
#: Metadata fields that hold an LSN in its text form "X/Y".
LSN_FIELDS = ("lsn", "commit_lsn", "end_lsn")


class EventParseError(ValueError):
    """The bytes are not a valid change event; the message is the reason."""


# ---- building and serialising (capture, snapshot, tests) --------------------------------------
@dataclass
class OutgoingEvent:
    """One Kafka message: key, value (the contract as a dict) and the commit it belongs to."""

    key: bytes
    value: dict[str, Any]
    end_lsn: int = 0

    @property
    def metadata(self) -> dict[str, Any]:
        return self.value["metadata"]

    def encode(self) -> bytes:
        return encode_json(self.value)


def message_key(table: str, payload: dict[str, Any], key_columns: list[str]) -> bytes:
    """`<table>:<pk>` so that one row's changes stay in one partition, in order."""
    return (table + ":" + ":".join(str(payload.get(col)) for col in key_columns)).encode()


def build_event(
    table: str,
    operation: str,
    payload: dict[str, Any],
    lsn: int | str = 0,
    key_columns: list[str] | None = None,
    **metadata: Any,
) -> OutgoingEvent:
    """One change event in the contract; extra keyword arguments become metadata fields.

    LSNs may be given as integers (`lsn`, `commit_lsn`, `end_lsn`): they are written "X/Y".
    The key is `<table>:<primary key>` (`<table>:*` for a truncate, which affects every row).
    """
    lsn_text = lsn if isinstance(lsn, str) else lsn_to_str(lsn)
    for name in LSN_FIELDS:
        if isinstance(metadata.get(name), int):
            metadata[name] = lsn_to_str(metadata[name])
    if operation == "truncate":
        key = f"{table}:*".encode()
    else:
        key = message_key(table, payload, key_columns or ["id"])
    value = {
        "metadata": {"table": table, "operation": operation, "lsn": lsn_text, **metadata},
        "payload": payload,
    }
    return OutgoingEvent(key=key, value=value)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)  # exact; the OLAP model parses it back to Decimal
    if isinstance(value, bytes | memoryview):
        return "\\x" + bytes(value).hex()  # PostgreSQL's own text form of bytea
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def encode_json(value: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON; Decimals as strings so no money is rounded through a float."""
    return json.dumps(
        value, default=_json_default, separators=(",", ":"), ensure_ascii=False
    ).encode()


# ---- parsing (router) -------------------------------------------------------------------------
@dataclass(slots=True)
class ChangeEvent:
    """A parsed, checked change event: what the router needs, LSNs already as integers."""

    table: str
    operation: str
    lsn: int
    payload: dict[str, Any]
    metadata: dict[str, Any]
    end_lsn: int | None = None
    last_in_txn: bool = False
    unchanged_toast: list[str] = field(default_factory=list)


def parse_event(raw: bytes | None) -> ChangeEvent:
    """Kafka message value -> ChangeEvent, or EventParseError with a one-line reason.

    Checked: UTF-8 JSON object, `metadata.table` a non-empty string, `metadata.operation` one
    of OPERATIONS, every LSN field in "X/Y" form, `payload` an object. Snapshot rows may come
    without an LSN (Redpanda Connect): they get version 0, so any streamed change wins.
    """
    if raw is None:
        raise EventParseError("empty message: no value")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EventParseError(f"not UTF-8: invalid byte at position {exc.start}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise EventParseError(
            f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    if not isinstance(data, dict):
        raise EventParseError(f"expected a JSON object, got {_json_type(data)}")
    metadata = data.get("metadata")
    if metadata is None:
        raise EventParseError("missing 'metadata'")
    if not isinstance(metadata, dict):
        raise EventParseError(f"'metadata' must be an object, got {_json_type(metadata)}")
    payload = data.get("payload", {})
    if not isinstance(payload, dict):
        raise EventParseError(f"'payload' must be an object, got {_json_type(payload)}")
    table = metadata.get("table")
    if not isinstance(table, str) or not table:
        raise EventParseError(f"metadata.table: a non-empty string is required, got {table!r}")
    operation = metadata.get("operation")
    if operation not in OPERATIONS:
        raise EventParseError(
            f"metadata.operation: must be one of {', '.join(OPERATIONS)}; got {operation!r}"
        )
    lsns = {name: _lsn(metadata, name) for name in LSN_FIELDS}
    unchanged = metadata.get("unchanged_toast") or []
    if not isinstance(unchanged, list) or not all(isinstance(c, str) for c in unchanged):
        raise EventParseError(f"metadata.unchanged_toast: not a list of names: {unchanged!r}")
    return ChangeEvent(
        table=table,
        operation=operation,
        lsn=lsns["lsn"] or 0,
        payload=payload,
        metadata=metadata,
        end_lsn=lsns["end_lsn"],
        last_in_txn=metadata.get("last_in_txn") is True,
        unchanged_toast=unchanged,
    )


def _lsn(metadata: dict[str, Any], name: str) -> int | None:
    text = metadata.get(name)
    if text is None:
        return None
    try:
        return str_to_lsn(text)
    except ValueError as exc:
        raise EventParseError(f"metadata.{name}: {exc}") from None


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


# ---- the same contract as Pydantic models (docs, lessons, hand-made events) -------------------
class CdcMetadata(BaseModel):
    """Where a change comes from and what it is. Unknown extra fields are kept."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    table: str = Field(min_length=1)
    operation: Operation
    #: The change's own LSN, "X/Y". Snapshot rows carry "0/0" (or none, from Redpanda Connect).
    lsn: str = "0/0"
    schema_: str | None = Field(default=None, alias="schema")
    commit_lsn: str | None = None
    #: End LSN of the transaction: what capture confirms to PostgreSQL.
    end_lsn: str | None = None
    xid: int | None = None
    commit_ts: str | None = None
    #: True on the last event of a transaction: the router may then record `end_lsn`.
    last_in_txn: bool = False
    #: Columns whose TOASTed value did not change and was not sent (left out of the payload).
    unchanged_toast: list[str] = Field(default_factory=list)

    @field_validator(*LSN_FIELDS)
    @classmethod
    def _valid_lsn(cls, value: str | None) -> str | None:
        if value is not None:
            str_to_lsn(value)  # raises ValueError with the bad text
        return value


class CdcEvent(BaseModel):
    """One row change: metadata plus the row (`payload`)."""

    metadata: CdcMetadata
    payload: dict[str, Any] = Field(default_factory=dict)

    def to_bytes(self) -> bytes:
        """Serialised exactly as capture serialises its events."""
        return encode_json(
            {
                "metadata": self.metadata.model_dump(by_alias=True, exclude_none=True),
                "payload": self.payload,
            }
        )


def describe_validation_error(exc: ValidationError) -> str:
    """Pydantic's errors as one readable line: `email: Field required; ...`."""
    parts = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "event"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)
