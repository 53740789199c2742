"""The capture service as a background process of the embedded stack (`python -m cdc_kit capture`).

Healthy means: our process runs and has written a fresh "streaming" heartbeat (it does so every
fraction of a second while connected to PostgreSQL and the broker).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from cdc_kit.config import settings_env
from cdc_kit.services.process import ProcessService

HEARTBEAT_MAX_AGE = 10.0


class CaptureService(ProcessService):
    """pgoutput -> Kafka, started after PostgreSQL and the broker."""

    name = "capture"
    start_timeout = 60.0

    @property
    def address(self) -> str:
        return f"slot {self.settings.slot_name} -> {self.settings.cdc_topic}"

    @property
    def status_file(self) -> Path:
        from cdc_kit.capture import status_file_path  # the service writes it, we read it

        return status_file_path(self.settings)

    def command(self) -> list[str]:
        return [sys.executable, "-m", "cdc_kit", "capture"]

    def spawn_kwargs(self) -> dict[str, Any]:
        return {"env": settings_env(self.settings)}

    def prepare(self) -> None:
        self.status_file.unlink(missing_ok=True)

    def heartbeat(self) -> dict[str, Any]:
        try:
            return json.loads(self.status_file.read_text())
        except (OSError, ValueError):
            return {}

    def healthy(self) -> bool:
        beat = self.heartbeat()
        fresh = time.time() - float(beat.get("heartbeat", 0)) < HEARTBEAT_MAX_AGE
        return fresh and beat.get("state") == "streaming"
