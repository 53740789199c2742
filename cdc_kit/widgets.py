"""The widget lab: change rows in PostgreSQL by hand and watch them arrive in ClickHouse.

Two layers, so that everything a button does can be tested and scripted without a browser:

- `ChangeLab` holds the handlers as plain methods (`insert`, `update`, `delete`, `bulk`) and
  the probes that read the row on every side (`pg_row`, `ch_versions`, `ch_final`) and time
  how long a change takes from its commit until it is visible in ClickHouse `FINAL`.
- `LabPanel` is the ipywidgets panel: buttons that call those methods, views that refresh by
  themselves from a task in the notebook kernel's own event loop. Widgets are only touched
  from that loop (or a cell): never from the router's thread.

    lab = ChangeLab(stack)
    panel = LabPanel(lab, router)
    panel.show()                  # in a notebook: the panel, refreshing itself
    lab.insert("customer", name="Ada Lovelace")
"""

from __future__ import annotations

import asyncio
import html
import io
import json
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pandas as pd
from clickhouse_connect.driver.binding import quote_identifier
from clickhouse_connect.driver.exceptions import ClickHouseError
from pydantic import ValidationError
from sqlalchemy import func, select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, SQLModel

from cdc_kit import olap, oltp
from cdc_kit.contract import describe_validation_error
from cdc_kit.errors import CdcKitError, first_line

#: Table -> the SQLModel class with its business rules (validates typed values).
RULES: dict[str, type[SQLModel]] = {
    "customer": oltp.CustomerBase,
    "product": oltp.ProductBase,
    "order": oltp.OrderBase,
    "orderitem": oltp.OrderItemBase,
}
#: Table -> the columns a person may type in the panel (the others are filled by the lab).
FORM_FIELDS: dict[str, tuple[str, ...]] = {
    "customer": ("name", "email", "country", "city", "bio"),
    "product": ("name", "category", "price", "description"),
    "order": ("customerId", "status"),
    "orderitem": ("orderId", "productId", "quantity"),
}
#: Columns the views show: key, the typed ones, then the CDC columns.
VIEW_COLUMNS: dict[str, tuple[str, ...]] = {
    table: ("id", *fields, *(("total",) if table == "order" else ()))
    for table, fields in FORM_FIELDS.items()
}

_WAL_NOW = text("SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn")
_FIRST = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Margaret", "Ken", "Frances"]
_LAST = ["Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Hamilton", "Allen"]
_PLACES = [("US", "Springfield"), ("DE", "Berlin"), ("FR", "Lyon"), ("NL", "Utrecht"),
           ("JP", "Osaka"), ("BR", "Recife"), ("SE", "Uppsala")]  # fmt: skip
_GOODS = [("Teapot", "tableware"), ("Notebook", "stationery"), ("Lamp", "lighting"),
          ("Kettle", "kitchen"), ("Pen", "stationery"), ("Mug", "tableware")]  # fmt: skip
_CENT = Decimal("0.01")


@dataclass
class Change:
    """One committed change and, once seen, how long it took to reach ClickHouse FINAL.

    `wal_before` is PostgreSQL's WAL insert position read in the same transaction just before
    the change: the change's own LSN (its `lsn` in ClickHouse) is at or after it, and every
    older version of the row is before it. That is how the lab knows *this* change arrived.
    """

    table: str
    operation: str
    id: int
    wal_before: int
    committed_at: float  # time.monotonic() right after COMMIT returned
    latency_s: float | None = None
    tracked: bool = True  # bulk changes: only the last one is timed

    @property
    def visible(self) -> bool:
        return self.latency_s is not None

    def __str__(self) -> str:
        timing = "" if self.latency_s is None else f", in FINAL after {self.latency_s * 1000:.0f} ms"
        return f"{self.operation} {self.table} {self.id}{timing}"


class ChangeLab:
    """Make changes in PostgreSQL and measure when ClickHouse shows them (plain methods)."""

    def __init__(self, stack: Any, seed: int | None = None) -> None:
        self.stack = stack
        self.engine = stack.pg_engine()
        self.ch = stack.clickhouse()
        self.database = stack.settings.clickhouse_database
        self.rng = random.Random(seed)
        self.changes: list[Change] = []

    # ---- the handlers ---------------------------------------------------------------------
    def insert(self, table: str, items: int | list[tuple[int, int]] | None = None,
               **values: Any) -> Change:  # fmt: skip
        """Insert a row; columns not given get random values. Orders get `items`: a number of
        random items (default 1-3) or a list of (product id, quantity)."""
        model = self._model(table)
        self._known_columns(table, values)
        if items is not None and table != "order":
            raise CdcKitError(f"only orders have items, not {table}")

        def write(db: Session) -> int:
            data = {**self._random_row(db, table), **_typed(values)}
            lines = self._order_lines(db, items) if table == "order" else []
            if lines:
                data["total"] = sum(price * quantity for _, quantity, price in lines)
            row = model(**self._validated(table, data).model_dump())
            db.add(row)
            db.flush()  # the order's id, for its items
            for product_id, quantity, price in lines:
                item = {"orderId": row.id, "productId": product_id, "quantity": quantity,
                        "price": price}  # fmt: skip
                db.add(oltp.OrderItem(**self._validated("orderitem", item).model_dump()))
            return row.id

        return self._commit(table, "insert", write)

    def update(self, table: str, id: int, **values: Any) -> Change:
        """Set the given columns of row `id`; without any, change one column at random."""
        model = self._model(table)
        self._known_columns(table, values)

        def write(db: Session) -> int:
            row = self._get(db, model, table, id)
            changes = _typed(values) or self._random_change(table, row)
            checked = self._validated(table, {**row.model_dump(), **changes})
            for column in changes:
                setattr(row, column, getattr(checked, column))
            return id

        return self._commit(table, "update", write)

    def delete(self, table: str, id: int) -> Change:
        """Delete row `id` (a customer's orders and an order's items go with it: ON DELETE
        CASCADE, each a delete event of its own)."""
        model = self._model(table)

        def write(db: Session) -> int:
            db.delete(self._get(db, model, table, id))
            return id

        return self._commit(table, "delete", write)

    def bulk(self, n: int, progress: Callable[[int, int], None] | None = None) -> list[Change]:
        """`n` random changes, each its own transaction: inserts, updates, and a few deletes of
        rows this burst inserted. Only the last is timed. `progress(done, n)` after each."""
        if n < 1:
            raise CdcKitError(f"bulk needs a positive number of changes, not {n}")
        done: list[Change] = []
        mine: dict[str, list[int]] = {"customer": [], "product": [], "order": []}
        for number in range(1, n + 1):
            roll = self.rng.random()
            table = self.rng.choice(list(mine))
            some_row = self._any_id(table) if 0.15 <= roll < 0.55 else None
            if roll < 0.15 and mine[table]:
                change = self.delete(table, mine[table].pop(self.rng.randrange(len(mine[table]))))
            elif some_row is not None:
                change = self.update(table, some_row)
            else:
                change = self.insert(table)
                mine[table].append(change.id)
            change.tracked = number == n
            done.append(change)
            if progress is not None:
                progress(number, n)
        return done

    # ---- reading the row on every side ------------------------------------------------------
    def ids(self, table: str, limit: int = 30) -> list[int]:
        """The newest ids of a table in PostgreSQL (for choosing a row)."""
        model = self._model(table)
        with Session(self.engine) as db:
            return list(db.exec(select(model.id).order_by(model.id.desc()).limit(limit)).scalars())

    def pg_row(self, table: str, id: int) -> pd.DataFrame:
        """The row as PostgreSQL has it now (empty if there is none)."""
        model = self._model(table)
        with Session(self.engine) as db:
            row = db.get(model, id)
            data = [] if row is None else [row.model_dump()]
        return pd.DataFrame(data, columns=list(VIEW_COLUMNS[table]))

    def ch_versions(self, table: str, id: int) -> pd.DataFrame:
        """Every version ClickHouse stores for the row, oldest first (no FINAL)."""
        return self._ch_select(table, id, final=False)

    def ch_final(self, table: str, id: int) -> pd.DataFrame:
        """The row as ClickHouse answers with FINAL: newest version, deleted rows hidden."""
        return self._ch_select(table, id, final=True)

    # ---- timing ---------------------------------------------------------------------------------
    @property
    def pending(self) -> list[Change]:
        """Timed changes not yet seen in FINAL (the newest 10: a stopped router must not make
        every refresh ask about hundreds)."""
        return [c for c in self.changes if c.tracked and c.latency_s is None][-10:]

    def is_visible(self, change: Change) -> bool:
        """True once ClickHouse FINAL shows this change (an insert or update with an LSN at or
        past `wal_before`; for a delete: no live row, and a tombstone at or past it)."""
        table = olap.table_name(olap.OLAP_MODELS[change.table], self.database)
        key = {"id": change.id}
        try:
            if change.operation == "delete":
                live, newest = self.ch.query(
                    f"SELECT (SELECT count() FROM {table} FINAL WHERE id = {{id:UInt64}}), "  # noqa: S608 - quoted identifier, bound value
                    f"(SELECT max(lsn) FROM {table} WHERE id = {{id:UInt64}})",
                    parameters=key,
                ).result_rows[0]
                return live == 0 and (newest or 0) >= change.wal_before
            newest = self.ch.query(
                f"SELECT max(lsn) FROM {table} FINAL WHERE id = {{id:UInt64}}",  # noqa: S608 - quoted identifier, bound value
                parameters=key,
            ).result_rows[0][0]
        except ClickHouseError:
            return False  # the router has not made the table yet
        return (newest or 0) >= change.wal_before

    def poll(self) -> list[Change]:
        """Look once at every pending change; those now visible get their latency. Returns them."""
        seen = []
        for change in self.pending:
            looked_at = time.monotonic()
            if self.is_visible(change):
                change.latency_s = looked_at - change.committed_at
                seen.append(change)
        return seen

    def wait_visible(self, change: Change | None = None, timeout: float = 15.0) -> float:
        """Wait until `change` (default: the newest) is in ClickHouse FINAL; its latency in s.

        The latency is measured by polling every 10 ms: it is exact to about that much.
        """
        change = change or self._newest()
        change.tracked = True
        deadline = time.monotonic() + timeout
        while change.latency_s is None:
            looked_at = time.monotonic()
            if self.is_visible(change):
                change.latency_s = looked_at - change.committed_at
                break
            if looked_at > deadline:
                raise CdcKitError(
                    f"{change} is not in ClickHouse FINAL after {timeout:.0f} s: is the router "
                    "running (router.start())? is capture running (python -m cdc_kit status)?"
                )
            time.sleep(0.01)
        return change.latency_s

    def latencies(self, last: int = 50) -> pd.DataFrame:
        """The measured changes, newest last: table, operation, id, latency in ms."""
        rows = [
            {"table": c.table, "operation": c.operation, "id": c.id,
             "latency_ms": round(c.latency_s * 1000, 1)}
            for c in self.changes if c.latency_s is not None
        ]  # fmt: skip
        return pd.DataFrame(rows[-last:], columns=["table", "operation", "id", "latency_ms"])

    def close(self) -> None:
        self.engine.dispose()
        self.ch.close()

    # ---- helpers ------------------------------------------------------------------------------
    @staticmethod
    def _model(table: str) -> type[SQLModel]:
        if table not in oltp.TABLES:
            raise CdcKitError(f"unknown table {table!r}; choose one of {', '.join(oltp.TABLES)}")
        return oltp.TABLES[table]

    @staticmethod
    def _known_columns(table: str, values: dict[str, Any]) -> None:
        allowed = set(RULES[table].model_fields) - {"createdAt"}
        unknown = sorted(set(values) - allowed)
        if unknown:
            raise CdcKitError(
                f"{table} has no column {', '.join(unknown)} to set; "
                f"columns: {', '.join(sorted(allowed))}"
            )

    @staticmethod
    def _validated(table: str, data: dict[str, Any]) -> SQLModel:
        """The source's business rules (min_length, gt...) checked before anything is written."""
        try:
            return RULES[table].model_validate(data)
        except ValidationError as exc:
            raise CdcKitError(f"{table}: {describe_validation_error(exc)}") from None

    @staticmethod
    def _get(db: Session, model: type[SQLModel], table: str, id: Any) -> Any:
        row = db.get(model, int(id))
        if row is None:
            raise CdcKitError(f"{table} {id} does not exist (any more) in PostgreSQL")
        return row

    def _commit(self, table: str, operation: str, write: Callable[[Session], int]) -> Change:
        """Run `write` in one transaction that first reads the WAL position; record the change."""
        try:
            with Session(self.engine) as db:
                wal_before = int(db.exec(_WAL_NOW).scalar_one())
                row_id = write(db)
                db.commit()
        except SQLAlchemyError as exc:
            raise CdcKitError(f"PostgreSQL refused the {operation}: {_db_reason(exc)}") from None
        change = Change(table, operation, row_id, wal_before, time.monotonic())
        self.changes.append(change)
        return change

    def _newest(self) -> Change:
        if not self.changes:
            raise CdcKitError("no change made yet: insert, update or delete a row first")
        return self.changes[-1]

    def _any_id(self, table: str) -> int | None:
        model = self._model(table)
        with Session(self.engine) as db:
            return db.exec(select(model.id).order_by(func.random()).limit(1)).scalars().first()

    def _random_ids(self, db: Session, model: type[SQLModel], k: int) -> list[int]:
        return list(db.exec(select(model.id).order_by(func.random()).limit(k)).scalars())

    def _random_row(self, db: Session, table: str) -> dict[str, Any]:
        rng = self.rng
        if table == "customer":
            first, last = rng.choice(_FIRST), rng.choice(_LAST)
            country, city = rng.choice(_PLACES)
            return {"name": f"{first} {last}", "country": country, "city": city,
                    "email": f"{first}.{last}{rng.randint(1, 9999)}@example.com".lower()}  # fmt: skip
        if table == "product":
            name, category = rng.choice(_GOODS)
            price = Decimal(rng.randint(199, 9999)) / 100
            return {"name": f"{name} {rng.randint(1, 999)}", "category": category, "price": price}
        if table == "order":
            customers = self._random_ids(db, oltp.Customer, 1)
            if not customers:
                raise CdcKitError("an order needs a customer: insert a customer first")
            return {"customerId": customers[0], "total": Decimal(0),
                    "status": rng.choice(oltp.ORDER_STATUSES)}  # fmt: skip
        orders = self._random_ids(db, oltp.Order, 1)
        products = self._random_ids(db, oltp.Product, 1)
        if not orders or not products:
            raise CdcKitError("an order item needs an order and a product: insert them first")
        price = db.get(oltp.Product, products[0]).price
        return {"orderId": orders[0], "productId": products[0],
                "quantity": rng.randint(1, 5), "price": price}  # fmt: skip

    def _order_lines(self, db: Session, items: Any) -> list[tuple[int, int, Decimal]]:
        """(product id, quantity, price) of a new order's items: `items` random ones when it is
        a number (default 1-3), else the (product id, quantity) pairs given."""
        if items is None or items == "":
            items = self.rng.randint(1, 3)
        if isinstance(items, int | str):
            count = int(items)
            if not 1 <= count <= 20:
                raise CdcKitError(f"an order needs 1 to 20 items, not {count}")
            products = self._random_ids(db, oltp.Product, count)
            if not products:
                raise CdcKitError("an order needs products: insert a product first")
            items = [(product, self.rng.randint(1, 4)) for product in products]
        lines = []
        for product_id, quantity in items:
            product = db.get(oltp.Product, int(product_id))
            if product is None:
                raise CdcKitError(f"product {product_id} does not exist")
            lines.append((product.id, int(quantity), Decimal(product.price)))
        return lines

    def _random_change(self, table: str, row: Any) -> dict[str, Any]:
        rng = self.rng
        if table == "customer":
            country, city = rng.choice([p for p in _PLACES if p[1] != row.city])
            return {"country": country, "city": city}
        if table == "product":
            factor = Decimal(rng.randint(80, 120)) / 100
            return {"price": max(_CENT, (Decimal(row.price) * factor).quantize(_CENT, ROUND_HALF_UP))}
        if table == "order":
            statuses = oltp.ORDER_STATUSES
            following = statuses[(statuses.index(row.status) + 1) % len(statuses)]
            return {"status": following} if row.status in statuses else {"status": "paid"}
        return {"quantity": row.quantity % 9 + 1}

    def _ch_select(self, table: str, id: int, final: bool) -> pd.DataFrame:
        self._model(table)
        columns = [*VIEW_COLUMNS[table], "is_deleted", "lsn"]
        names = ", ".join(quote_identifier(c) for c in columns)
        source = olap.table_name(olap.OLAP_MODELS[table], self.database)
        query = (
            f"SELECT {names} FROM {source} {'FINAL' if final else ''} "  # noqa: S608 - quoted identifiers, bound value
            "WHERE id = {id:UInt64} ORDER BY lsn"
        )
        try:
            frame = self.ch.query_df(query, parameters={"id": int(id)})
        except ClickHouseError:
            frame = pd.DataFrame()  # no table yet: the router makes it
        return frame if len(frame) else pd.DataFrame(columns=columns)


def _typed(values: dict[str, Any]) -> dict[str, Any]:
    """Values typed in the panel arrive as text: blank means "not given"."""
    return {k: v for k, v in values.items() if not (isinstance(v, str) and not v.strip())}


def _db_reason(exc: SQLAlchemyError) -> str:
    cause = getattr(exc, "orig", None) or exc
    return first_line(cause)


class TopicTail:
    """The newest events on the change topic, read incrementally (no consumer group).

    It reads the topic once from the start, then only what is new at each `read()`: cheap
    enough for a panel that refreshes every second.
    """

    def __init__(self, stack: Any, keep: int = 50) -> None:
        from kafka import TopicPartition

        self.consumer = stack.kafka_consumer()
        self.consumer.assign([TopicPartition(stack.settings.cdc_topic, 0)])
        self.consumer.seek_to_beginning()
        self.events: deque[dict[str, Any]] = deque(maxlen=keep)

    def read(self, limit: int = 5) -> pd.DataFrame:
        while True:
            batch = self.consumer.poll(timeout_ms=30, max_records=5000)
            if not batch:
                break
            for records in batch.values():
                self.events.extend(_event_row(record) for record in records)
        rows = list(self.events)[-limit:]
        return pd.DataFrame(rows, columns=["offset", "table", "operation", "lsn", "payload"])

    def close(self) -> None:
        self.consumer.close()


def _event_row(record: Any) -> dict[str, Any]:
    try:
        event = json.loads(record.value)
        metadata, payload = event.get("metadata", {}), event.get("payload")
    except (ValueError, TypeError, AttributeError):
        metadata, payload = {}, record.value
    text_payload = json.dumps(payload, default=str)
    return {
        "offset": record.offset,
        "table": metadata.get("table"),
        "operation": metadata.get("operation"),
        "lsn": metadata.get("lsn"),
        "payload": text_payload if len(text_payload) <= 90 else text_payload[:87] + "...",
    }


# ---- the panel ----------------------------------------------------------------------------------
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

    def __init__(self, lab: ChangeLab, router: Any = None, refresh_s: float = 1.0) -> None:
        import ipywidgets as w

        self.lab = lab
        self.router = router
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
        self.bulk_count = w.BoundedIntText(value=100, min=1, max=100_000, description="changes")
        self.bulk_button = w.Button(description="Bulk", icon="bolt")
        self.progress = w.IntProgress(value=0, min=0, max=1, description="bulk")
        self.status = w.HTML("")
        self.status.add_class("cdc-status")
        controls = [
            w.HTML("<b>Make a change in PostgreSQL</b>"),
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
        for view, name in [(self.pg_view, "pg"), (self.versions_view, "versions"),
                           (self.final_view, "final"), (self.events_view, "events"),
                           (self.stats_view, "stats"), (self.latency_label, "latency")]:  # fmt: skip
            view.add_class(f"cdc-{name}")
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

        display(self.widget)
        self.start()

    def start(self) -> None:
        """Refresh from a task in the running event loop (a notebook kernel has one)."""
        if self._task is not None and not self._task.done():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise CdcKitError(
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
        extra = {"items": self.items.value} if table == "order" else {}
        self._act(lambda: self.lab.insert(table, **extra, **self.typed_values()))

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

    def close(self) -> None:
        """Stop refreshing and let the router go (another notebook may then route)."""
        self.stop()
        if self._tail is not None:
            self._tail.close()
            self._tail = None
        if self.router is not None:
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
