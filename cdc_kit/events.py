"""The message contract between capture and router, as Pydantic models.

Every change event on the topic looks like this (our capture and Redpanda Connect agree)::

    {"metadata": {"table": "customer", "operation": "update", "lsn": "0/1A2B3C4", ...},
     "payload":  {"id": 1, "email": "jane@example.com", ...}}

`parse_event` turns raw Kafka bytes into a `CdcEvent`, or raises `EventParseError` whose
message says exactly what is wrong — that message is what a dead letter records.
"""

from __future__ import annotations

import json
import uuid
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from cdc_kit.lsn import str_to_lsn

Operation = Literal["read", "insert", "update", "delete", "truncate"]


class EventParseError(ValueError):
    """The bytes are not a valid change event; the message is the reason."""


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

    @field_validator("lsn", "commit_lsn", "end_lsn")
    @classmethod
    def _valid_lsn(cls, value: str | None) -> str | None:
        if value is not None:
            str_to_lsn(value)  # raises ValueError with the bad text
        return value

    @property
    def lsn_int(self) -> int:
        return str_to_lsn(self.lsn)


class CdcEvent(BaseModel):
    """One row change: metadata plus the row (`payload`)."""

    metadata: CdcMetadata
    payload: dict[str, Any] = Field(default_factory=dict)


def parse_event(raw: bytes | None) -> CdcEvent:
    """Kafka message value -> CdcEvent, or EventParseError with a one-line reason."""
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
        raise EventParseError(f"expected a JSON object, got {type(data).__name__}")
    if "metadata" not in data:
        raise EventParseError("missing 'metadata'")
    if "payload" in data and not isinstance(data["payload"], dict):
        raise EventParseError(f"'payload' must be an object, got {type(data['payload']).__name__}")
    try:
        return CdcEvent.model_validate(data)
    except ValidationError as exc:
        raise EventParseError(describe_validation_error(exc)) from None


def describe_validation_error(exc: ValidationError) -> str:
    """Pydantic's errors as one readable line: `metadata.lsn: not an LSN ...; ...`."""
    parts = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "event"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


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


def event_to_bytes(event: CdcEvent) -> bytes:
    """Serialize an event exactly as capture does (for tests and hand-made events)."""
    return encode_json(
        {
            "metadata": event.metadata.model_dump(by_alias=True, exclude_none=True),
            "payload": event.payload,
        }
    )
