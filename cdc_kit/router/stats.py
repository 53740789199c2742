"""What the router did: one batch's result, and the running counters a notebook or panel reads.

The counters are kept under a lock: the router's background thread adds to them while a
notebook (or the widget panel's refresh task) reads a snapshot.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any


@dataclass
class BatchResult:
    """What one `step()` (or several, added up) did."""

    consumed: int = 0
    routed: int = 0
    dead_lettered: int = 0
    tables: Counter[str] = field(default_factory=Counter)
    dead_by_stage: Counter[str] = field(default_factory=Counter)
    progress_lsn: int | None = None

    def __add__(self, other: BatchResult) -> BatchResult:
        return BatchResult(
            self.consumed + other.consumed,
            self.routed + other.routed,
            self.dead_lettered + other.dead_lettered,
            self.tables + other.tables,
            self.dead_by_stage + other.dead_by_stage,
            max(self.progress_lsn or 0, other.progress_lsn or 0) or None,
        )

    def __str__(self) -> str:
        tables = ", ".join(f"{t}: {n}" for t, n in sorted(self.tables.items())) or "none"
        text = f"consumed {self.consumed}, routed {self.routed} ({tables})"
        if self.dead_lettered:
            stages = ", ".join(f"{s}: {n}" for s, n in sorted(self.dead_by_stage.items()))
            text += f", dead-lettered {self.dead_lettered} ({stages})"
        return text


class RouterStats:
    """The router's counters since it was made; safe to read from another thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rate: deque[tuple[float, int]] = deque(maxlen=64)
        self._values: dict[str, Any] = {
            "consumed": 0,
            "routed": 0,
            "dead_lettered": 0,
            "replayed": 0,
            "batches": 0,
            "by_table": Counter(),
            "dead_by_stage": Counter(),
            "last_error": "",
            "last_batch_at": None,
            "restarts_seen": 0,
            "lag": None,
            "handed_over_to": None,
        }

    def add_batch(self, result: BatchResult) -> None:
        with self._lock:
            self._values["consumed"] += result.consumed
            self._values["routed"] += result.routed
            self._values["dead_lettered"] += result.dead_lettered
            self._values["batches"] += 1
            self._values["by_table"].update(result.tables)
            self._values["dead_by_stage"].update(result.dead_by_stage)
            self._values["last_batch_at"] = time.time()
            self._rate.append((time.monotonic(), self._values["consumed"]))

    def add_replay(self, replayed: int, result: BatchResult) -> None:
        """Replayed dead letters count as routed: consumed + replayed == routed + dead."""
        with self._lock:
            self._values["replayed"] += replayed
            self._values["routed"] += result.routed
            self._values["by_table"].update(result.tables)

    def count(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self._values[name] += amount

    def set(self, name: str, value: Any) -> None:
        with self._lock:
            self._values[name] = value

    def snapshot(self) -> dict[str, Any]:
        """The counters now; `events_per_s` is the consumption rate over the last few seconds."""
        now = time.monotonic()
        with self._lock:
            values = {
                name: dict(value) if isinstance(value, Counter) else value
                for name, value in self._values.items()
            }
            recent = [(t, n) for t, n in self._rate if now - t <= 5.0]
        if len(recent) >= 2 and recent[-1][0] > recent[0][0]:
            values["events_per_s"] = (recent[-1][1] - recent[0][1]) / (recent[-1][0] - recent[0][0])
        else:
            values["events_per_s"] = 0.0
        return values
