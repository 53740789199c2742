"""Plots for the lessons, drawn in place in a notebook while something changes."""

from __future__ import annotations

import io
import time
from typing import Any

from matplotlib.figure import Figure

from cdc_kit import replication


def _png(figure: Figure) -> Any:
    from IPython.display import Image

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=72)
    return Image(data=buffer.getvalue())


class SlotGauge:
    """A live chart of every logical slot's lag and retained WAL (`replication.slot_health`).

    `show()` draws it once; each `update()` takes a new sample and redraws the same picture.
    `slots` limits it to some slots (default: all). The grey line is what the server must keep
    for the slots shown: the WAL since their oldest restart_lsn.
    """

    def __init__(
        self, conn: Any, slots: list[str] | None = None, title: str = "replication slots"
    ) -> None:
        self.conn = conn
        self.slots = slots
        self.title = title
        self.started = time.monotonic()
        #: (seconds since the gauge started, every slot's health at that moment)
        self.samples: list[tuple[float, list[replication.SlotHealth]]] = []
        self._handle: Any = None

    def sample(self) -> list[replication.SlotHealth]:
        health = [
            slot
            for slot in replication.slot_health(self.conn)
            if self.slots is None or slot.slot_name in self.slots
        ]
        self.samples.append((time.monotonic() - self.started, health))
        return health

    def show(self) -> None:
        from IPython.display import display

        self.sample()
        self._handle = display(_png(self.figure()), display_id=True)

    def update(self) -> None:
        if self._handle is None:
            self.show()
            return
        self.sample()
        self._handle.update(_png(self.figure()))

    def figure(self) -> Figure:
        """Two panels over time: lag (confirmed_flush_lsn) and retained WAL (restart_lsn)."""
        figure = Figure(figsize=(10, 3.4))
        figure.subplots_adjust(left=0.07, right=0.98, top=0.82, bottom=0.15, wspace=0.22)
        lag_axes, kept_axes = figure.subplots(1, 2, sharex=True)
        peak = max((s.retained_bytes or 0 for _, slots in self.samples for s in slots), default=0)
        unit, scale = ("MB", 2**20) if peak >= 2**20 else ("kB", 2**10)
        names = sorted({s.slot_name for _, slots in self.samples for s in slots})
        for name in names:
            mine = [(t, s) for t, slots in self.samples for s in slots if s.slot_name == name]
            times = [t for t, _ in mine]
            lag_axes.plot(times, [(s.lag_bytes or 0) / scale for _, s in mine], label=name)
            kept_axes.plot(times, [(s.retained_bytes or 0) / scale for _, s in mine], label=name)
        kept = [max((s.retained_bytes or 0 for s in slots), default=0) for _, slots in self.samples]
        kept_axes.plot(
            [t for t, _ in self.samples], [k / scale for k in kept],
            color="grey", linewidth=6, alpha=0.3, label="the server must keep",
        )  # fmt: skip
        lag_axes.set_title("lag: WAL not yet confirmed (confirmed_flush_lsn)", fontsize="medium")
        kept_axes.set_title("retained WAL, not recyclable (restart_lsn)", fontsize="medium")
        for axes in (lag_axes, kept_axes):
            axes.set_xlabel("seconds")
            axes.set_ylabel(unit)
            axes.set_ylim(bottom=0)
            axes.grid(alpha=0.3)
        kept_axes.legend(loc="upper left", fontsize="small")
        figure.suptitle(self.title)
        return figure
