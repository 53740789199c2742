"""The capture service's heartbeat: a small JSON file it rewrites while streaming.

Only the capture service process writes it (one file per slot); `up`, `status` and the
instructor's `doctor` read it to tell "running and streaming" from "running but stuck".
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from cdc_kit.config import Settings

#: A heartbeat older than this means capture is stuck (it beats several times a second).
MAX_AGE_S = 10.0


def heartbeat_path(settings: Settings) -> Path:
    """Where the capture service of this slot writes its heartbeat."""
    return settings.home / "run" / f"capture.{settings.slot_name}.status.json"


def write_heartbeat(path: Path, state: str, **facts: Any) -> None:
    """Replace the file atomically; a failure is ignored (capture works without it)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"state": state, "heartbeat": time.time(), **facts}))
        tmp.replace(path)
    except OSError:
        pass


def read_heartbeat(path: Path) -> dict[str, Any]:
    """The last heartbeat, or {} if there is none (yet)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def is_streaming(beat: dict[str, Any], max_age: float = MAX_AGE_S) -> bool:
    """True if the heartbeat is fresh and says capture is streaming."""
    fresh = time.time() - float(beat.get("heartbeat", 0)) < max_age
    return fresh and beat.get("state") == "streaming"
