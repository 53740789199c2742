"""The widget lab's ipywidgets panel: buttons on `ChangeLab` methods, views that refresh alone.

Widgets are only touched from the kernel's event loop (the panel's refresh task, or a cell),
never from the router's background thread: the panel reads `router.stats()`, a thread-safe
snapshot, and asks ClickHouse and PostgreSQL itself.
"""

from __future__ import annotations

import asyncio
import html
import io
import time
import weakref
from collections.abc import Callable
from datetime import datetime
from typing import Any, ClassVar

import pandas as pd

from cdc_kit.errors import FixableError, first_line
from cdc_kit.widgets.lab import FORM_FIELDS, RULES, Change, ChangeLab
from cdc_kit.widgets.tail import TopicTail

#: Compact tables with a rule under each row; scoped to the panel.
STYLE = """<style>
.cdc-lab table.cdc-table { border-collapse: collapse; font-size: 12px; margin: 2px 0 10px; }
.cdc-lab table.cdc-table th, .cdc-lab table.cdc-table td {
  padding: 2px 8px; text-align: left; border-bottom: 1px solid #e0e0e0; }
.cdc-lab table.cdc-table th { background: #f3f3f3; }
</style>"""


def _html_table(frame: pd.DataFrame, empty: str) -> str:
    """A small HTML table (values escaped), or a grey sentence when there is no row."""
    if frame.empty:
        return f'<div class="cdc-empty" style="color:#777">{html.escape(empty)}</div>'
    shown = frame.copy()
    for column in shown.columns:
        shown[column] = shown[column].map(_cell)
    return shown.to_html(index=False, border=0, escape=True, classes="cdc-table")


def _cell(value: Any) -> str:
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    text_value = "" if value is None or value is pd.NA else str(value)
    return text_value if len(text_value) <= 40 else text_value[:37] + "..."


def _titled(title: str, body: str) -> str:
    return f"<b>{html.escape(title)}</b>{body}"


class LabPanel:
    """The ipywidgets panel: a form and buttons on the left, live views of the row on the right.

    Buttons only call `ChangeLab` methods. `show()` displays the panel and starts `start()`,
    a task in the kernel's event loop that refreshes the views every `refresh_s` seconds and
    looks for pending changes every 20 ms (that is how the latency is timed).
    """

    #: The panel `show()` displayed last: a cell run again replaces it instead of adding a loop.
    _shown: ClassVar[weakref.ref | None] = None

    def __init__(self, lab: ChangeLab, router: Any = None, refresh_s: float = 1.0) -> None:
        import ipywidgets as w

        self.lab = lab
        self.router = router
        self._handover_said: str | None = None
        self.refresh_s = refresh_s
        self.watching: tuple[str, int] | None = None
        self._task: asyncio.Task | None = None
        self._tail: TopicTail | None = None
        self._plotted = -1
        self._choosing = False

        # ---- left: make changes
        self.table = w.Dropdown(options=list(RULES), value="customer", description="table")
        self.fields: dict[str, Any] = {}
        self.form = w.VBox()
        self.items = w.BoundedIntText(value=2, min=1, max=20, description="items")
        self.row = w.Dropdown(options=[], description="row")
        self.insert_button = w.Button(description="Insert", icon="plus", button_style="success")
        self.update_button = w.Button(description="Update", icon="pencil")
        self.delete_button = w.Button(description="Delete", icon="trash", button_style="danger")
        self.bulk_count = w.BoundedIntText(
            value=100, min=1, max=100_000, description="changes", layout=w.Layout(width="200px")
        )
        self.bulk_button = w.Button(description="Bulk", icon="bolt")
        self.progress = w.IntProgress(value=0, min=0, max=1, description="bulk")
        self.status = w.HTML("")
        self.status.add_class("cdc-status")
        controls = [
            w.HTML(STYLE + "<b>Make a change in PostgreSQL</b>"),
            self.table,
            w.HTML('<span style="color:#777">blank fields get random values</span>'),
            self.form,
            w.HBox([self.insert_button]),
            self.row,
            w.HBox([self.update_button, self.delete_button]),
            w.HBox([self.bulk_count, self.bulk_button]),
            self.progress,
            self.status,
        ]
        if router is not None:
            self.router_button = w.ToggleButton(value=bool(router.running), icon="play")
            self.router_button.observe(self._on_router_toggle, names="value")
            self._label_router_button()
            controls.insert(1, self.router_button)
        self.stop_button = w.Button(description="Stop lab", icon="stop")
        controls.append(self.stop_button)

        # ---- right: watch it travel
        self.watch_label = w.HTML("")
        self.pg_view = w.HTML()
        self.versions_view = w.HTML()
        self.final_view = w.HTML()
        self.events_view = w.HTML()
        self.stats_view = w.HTML()
        self.latency_label = w.HTML()
        self.latency_plot = w.Image(format="png", layout=w.Layout(width="320px"))
        named = {"pg": self.pg_view, "versions": self.versions_view, "final": self.final_view,
                 "events": self.events_view, "stats": self.stats_view,
                 "latency": self.latency_label}  # fmt: skip
        for name, view in named.items():
            view.add_class(f"cdc-{name}")  # names for a browser test, and for styling
        watch = w.VBox(
            [self.watch_label, self.pg_view, self.versions_view, self.final_view,
             self.latency_label, self.latency_plot, self.events_view, self.stats_view],
            layout=w.Layout(min_width="520px"),
        )  # fmt: skip
        self.widget = w.HBox([w.VBox(controls, layout=w.Layout(width="380px")), watch])
        self.widget.add_class("cdc-lab")

        self.table.observe(self._on_table, names="value")
        self.row.observe(self._on_row, names="value")
        self.insert_button.on_click(self._on_insert)
        self.update_button.on_click(self._on_update)
        self.delete_button.on_click(self._on_delete)
        self.bulk_button.on_click(self._on_bulk)
        self.stop_button.on_click(lambda _: self.close())
        self._on_table({"new": self.table.value})

    # ---- showing and refreshing ---------------------------------------------------------------
    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    def show(self) -> None:
        """Display the panel and start refreshing it (in a notebook)."""
        from IPython.display import display

        previous = LabPanel._shown() if LabPanel._shown is not None else None
        if previous is not None and previous is not self:
            previous.close(release_router=False)
            previous._say("replaced by a newer panel (its cell ran again)")
        display(self.widget)
        self.start()
        LabPanel._shown = weakref.ref(self)

    def start(self) -> None:
        """Refresh from a task in the running event loop (a notebook kernel has one)."""
        if self._task is not None and not self._task.done():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise FixableError(
                "start() needs a running event loop (a notebook kernel has one); "
                "outside a notebook call refresh() yourself"
            ) from None
        self._task = loop.create_task(self._run())

    def stop(self) -> None:
        """Stop refreshing (the buttons still work)."""
        if self._task is not None:
            self._task.cancel()
            self._task = None

    @property
    def refreshing(self) -> bool:
        return self._task is not None and not self._task.done()

    async def _run(self) -> None:
        """While a change is on its way, only look for it (every 20 ms: a slow redraw would
        inflate its latency); redraw when it arrives, and every `refresh_s` otherwise."""
        next_refresh = 0.0
        while True:
            try:
                now = time.monotonic()
                pending = self.lab.pending
                if pending and self.lab.poll():
                    next_refresh = 0.0  # it arrived: show it now
                waiting_long = pending and now - pending[-1].committed_at > 2.0
                if now >= next_refresh and (not self.lab.pending or waiting_long):
                    self.refresh()
                    next_refresh = time.monotonic() + self.refresh_s
            except Exception as exc:  # noqa: BLE001 - a refresh must never end the loop
                self._say(f"✗ refresh failed: {first_line(exc)}", error=True)
                next_refresh = time.monotonic() + 5 * self.refresh_s
            await asyncio.sleep(0.02 if self.lab.pending else 0.1)

    def refresh(self) -> None:
        """Redraw every view once (the loop calls this; a cell may too)."""
        if self.watching is None:
            self.watch_label.value = "<b>Watching:</b> nothing yet: insert, or choose a row"
            self.pg_view.value = self.versions_view.value = self.final_view.value = ""
        else:
            table, id = self.watching
            self.watch_label.value = f"<b>Watching:</b> {html.escape(table)} {id}"
            self.pg_view.value = _titled(
                "PostgreSQL: the row now", _html_table(self.lab.pg_row(table, id), "no row")
            )
            self.versions_view.value = _titled(
                "ClickHouse: every stored version (no FINAL)",
                _html_table(self.lab.ch_versions(table, id), "no version yet"),
            )
            self.final_view.value = _titled(
                "ClickHouse FINAL: what a correct query sees",
                _html_table(self.lab.ch_final(table, id), "no live row (deleted, or not here yet)"),
            )
        self._refresh_latency()
        self._refresh_events()
        self._refresh_stats()

    def _refresh_latency(self) -> None:
        latencies = self.lab.latencies(last=30)
        pending = len(self.lab.pending)
        if latencies.empty:
            text_value = "no change timed yet"
        else:
            last = latencies.iloc[-1]
            text_value = (
                f"last change ({last['operation']} {last['table']} {last['id']}): commit → "
                f"visible in FINAL in <b>{last['latency_ms']:.0f} ms</b>"
            )
        if pending:
            text_value += f"; {pending} change(s) on the way"
        self.latency_label.value = _titled("End-to-end latency", f"<div>{text_value}</div>")
        if len(latencies) != self._plotted:
            self._plotted = len(latencies)
            self.latency_plot.value = _latency_png(latencies) if len(latencies) else b""

    def _refresh_events(self) -> None:
        if self._tail is None:
            self._tail = TopicTail(self.lab.stack)
        self.events_view.value = _titled(
            "Last events on the topic", _html_table(self._tail.read(5), "no events yet")
        )

    def _refresh_stats(self) -> None:
        if self.router is None:
            self.stats_view.value = ""
            return
        stats = self.router.stats()
        shown = {k: stats.get(k) for k in ("running", "consumed", "routed", "dead_lettered",
                                          "lag", "events_per_s")}  # fmt: skip
        shown["events_per_s"] = round(shown["events_per_s"] or 0.0, 1)
        frame = pd.DataFrame([shown])
        self.stats_view.value = _titled("Router", _html_table(frame, ""))
        if hasattr(self, "router_button") and self.router_button.value != self.router.running:
            self.router_button.value = bool(self.router.running)
        handed_over_to = stats.get("handed_over_to")
        if handed_over_to and handed_over_to != self._handover_said:
            # Another lesson's router asked for the consumer group: this one stopped for it.
            self._handover_said = handed_over_to
            self._say(
                f"the router handed its group over to {handed_over_to}; "
                "press 'router stopped' to take it back"
            )

    # ---- handlers: each calls the lab, then shows the result ------------------------------------
    def _on_table(self, change: dict[str, Any]) -> None:
        import ipywidgets as w

        table = change["new"]
        self.fields = {name: w.Text(description=name, placeholder="(random)")
                       for name in FORM_FIELDS[table]}  # fmt: skip
        extra = [self.items] if table == "order" else []
        self.form.children = [*self.fields.values(), *extra]
        self._reload_rows()
        if self.row.value is not None:
            self.watching = (table, int(self.row.value))

    def _on_row(self, change: dict[str, Any]) -> None:
        if not self._choosing and change["new"] is not None:
            self.watching = (self.table.value, int(change["new"]))
            self._safe_refresh()

    def _reload_rows(self, choose: int | None = None) -> None:
        """Offer the newest ids of the table; select `choose` without moving the watch."""
        self._choosing = True
        try:
            ids = self.lab.ids(self.table.value)
            if choose is not None and choose not in ids:
                ids = [choose, *ids]
            self.row.options = ids
            self.row.value = choose if choose is not None else (ids[0] if ids else None)
        except Exception as exc:  # noqa: BLE001 - shown in the panel
            self._say(f"✗ {first_line(exc)}", error=True)
        finally:
            self._choosing = False

    def typed_values(self) -> dict[str, str]:
        return {name: field.value for name, field in self.fields.items() if field.value.strip()}

    def _on_insert(self, _button: Any) -> None:
        table = self.table.value
        items = self.items.value if table == "order" else None
        self._act(lambda: self.lab.insert(table, items, **self.typed_values()))

    def _on_update(self, _button: Any) -> None:
        if self.row.value is None:
            self._say("✗ choose a row to update first", error=True)
            return
        self._act(lambda: self.lab.update(self.table.value, self.row.value, **self.typed_values()))

    def _on_delete(self, _button: Any) -> None:
        if self.row.value is None:
            self._say("✗ choose a row to delete first", error=True)
            return
        self._act(lambda: self.lab.delete(self.table.value, self.row.value))

    def _on_bulk(self, _button: Any) -> None:
        n = self.bulk_count.value
        self.progress.max, self.progress.value = n, 0

        def progress(done: int, total: int) -> None:
            if done == total or done % max(1, total // 50) == 0:
                self.progress.value = done

        self._act(lambda: self.lab.bulk(n, progress)[-1], what=f"{n} changes, the last: ")

    def _act(self, action: Callable[[], Change], what: str = "") -> None:
        """Run a lab method; show what it did, or its one-line error (nothing was written)."""
        try:
            change = action()
        except Exception as exc:  # noqa: BLE001 - shown in the panel, never raised at a click
            self._say(f"✗ {first_line(exc)}", error=True)
            return
        self._say(f"✓ committed {what}{change}; watch it arrive →")
        self.watching = (change.table, change.id)
        self.watch_label.value = f"<b>Watching:</b> {html.escape(change.table)} {change.id}"
        if change.table == self.table.value:
            self._reload_rows(choose=change.id)
        # No redraw here: the refresh task shows the change, once it has timed its arrival.

    def _say(self, message: str, error: bool = False) -> None:
        color = "#b00020" if error else "#1b5e20"
        self.status.value = f'<span style="color:{color}">{html.escape(message)}</span>'

    def _safe_refresh(self) -> None:
        try:
            self.refresh()
        except Exception as exc:  # noqa: BLE001 - shown in the panel
            self._say(f"✗ refresh failed: {first_line(exc)}", error=True)

    def _label_router_button(self) -> None:
        running = self.router_button.value
        self.router_button.description = "router running" if running else "router stopped"
        self.router_button.icon = "pause" if running else "play"
        self.router_button.button_style = "info" if running else "warning"

    def _on_router_toggle(self, change: dict[str, Any]) -> None:
        if change["new"] and not self.router.running:
            try:
                self.router.start()
            except Exception as exc:  # noqa: BLE001 - shown in the panel
                self._say(f"✗ {first_line(exc)}", error=True)
                self.router_button.value = False
        elif not change["new"] and self.router.running:
            self.router.stop()
        self._label_router_button()

    def close(self, release_router: bool = True) -> None:
        """Stop refreshing, close the topic reader and (the Stop button) let the router go,
        so that another notebook may route with the same consumer group."""
        self.stop()
        if self._tail is not None:
            self._tail.close()
            self._tail = None
        if self.router is not None and release_router:
            self.router.close()
            if hasattr(self, "router_button"):
                self.router_button.value = False
            self._say("lab stopped: the router let go of its group")


def _latency_png(latencies: pd.DataFrame) -> bytes:
    """A small bar chart of the recent latencies, in ms."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(4.2, 1.8), layout="constrained")
    axes = figure.subplots()
    colors = {"insert": "#2e7d32", "update": "#1565c0", "delete": "#c62828"}
    axes.bar(
        range(len(latencies)),
        latencies["latency_ms"],
        color=[colors.get(op, "grey") for op in latencies["operation"]],
    )
    axes.set_ylabel("ms")
    axes.set_xlabel("recent changes (green insert, blue update, red delete)", fontsize="small")
    axes.set_xticks([])
    axes.set_ylim(bottom=0)
    axes.grid(axis="y", alpha=0.3)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80)
    return buffer.getvalue()
