"""Hand-made change events, in the exact contract capture publishes (router tests, with and
without services)."""

from __future__ import annotations

import json
from typing import Any

#: A customer row as capture would send it.
CUSTOMER = {
    "id": 1,
    "email": "ada@example.com",
    "name": "Ada",
    "country": "UK",
    "city": "London",
    "bio": None,
    "createdAt": "2026-01-01T00:00:00+00:00",
}


def event(table: str, operation: str, lsn: str, payload: dict[str, Any], **meta: Any) -> bytes:
    """One message value: `{"metadata": {table, operation, lsn, **meta}, "payload": ...}`."""
    metadata = {"table": table, "operation": operation, "lsn": lsn, **meta}
    return json.dumps({"metadata": metadata, "payload": payload}).encode()
