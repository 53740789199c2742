"""The capture worker as a background process of the embedded stack (`python -m cdc_kit capture`).

Healthy means: our process runs and its heartbeat is fresh and says "streaming" (it beats
several times a second while connected to PostgreSQL and the broker).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from cdc_kit.capture.heartbeat import heartbeat_path, is_streaming, read_heartbeat
from cdc_kit.config import settings_env
from cdc_kit.services.process import ProcessService


class CaptureService(ProcessService):
    """pgoutput -> Kafka, started after PostgreSQL and the broker."""

    name = "capture"
    start_timeout = 60.0

    @property
    def address(self) -> str:
        return f"slot {self.settings.slot_name} -> {self.settings.cdc_topic}"

    @property
    def heartbeat_file(self) -> Path:
        return heartbeat_path(self.settings)

    def command(self) -> list[str]:
        return [sys.executable, "-m", "cdc_kit", "capture"]

    def spawn_kwargs(self) -> dict[str, Any]:
        return {"env": settings_env(self.settings)}

    def prepare(self) -> None:
        self.heartbeat_file.unlink(missing_ok=True)

    def heartbeat(self) -> dict[str, Any]:
        return read_heartbeat(self.heartbeat_file)

    def healthy(self) -> bool:
        return is_streaming(self.heartbeat())
