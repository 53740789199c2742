"""The lab's handlers and probes: change rows in PostgreSQL, time their arrival in ClickHouse.

Every panel button calls one of these plain methods, so each can be scripted and tested
without a browser:

    lab = ChangeLab(stack)
    change = lab.insert("customer", name="Ada Lovelace")   # blank columns get random values
    lab.wait_visible(change)                              # seconds from COMMIT to FINAL
    lab.ch_versions("customer", change.id)                # every version ClickHouse stores
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pandas as pd
from clickhouse_connect.driver.exceptions import ClickHouseError
from pydantic import ValidationError
from sqlalchemy import func, text
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, SQLModel, select

from cdc_kit import olap, oltp
from cdc_kit.errors import FixableError, first_line
from cdc_kit.olap import describe_validation_error
from cdc_kit.warehouse import row_versions

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

    def __str__(self) -> str:
        if self.latency_s is None:
            return f"{self.operation} {self.table} {self.id}"
        timing = f", in FINAL after {self.latency_s * 1000:.0f} ms"
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
            raise FixableError(f"only orders have items, not {table}")

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

    def update(self, table: str, row_id: int, **values: Any) -> Change:
        """Set the given columns of row `row_id`; without any, change one column at random."""
        model = self._model(table)
        self._known_columns(table, values)

        def write(db: Session) -> int:
            row = self._get(db, model, table, row_id)
            changes = _typed(values) or self._random_change(table, row)
            checked = self._validated(table, {**row.model_dump(), **changes})
            for column in changes:
                setattr(row, column, getattr(checked, column))
            if not db.is_modified(row):
                # SQLAlchemy sends no UPDATE for equal values: no WAL, no event, nothing to see.
                same = ", ".join(f"{column}={getattr(row, column)}" for column in changes)
                raise FixableError(f"{table} {row_id} already has {same}: nothing to update")
            return row_id

        return self._commit(table, "update", write)

    def delete(self, table: str, row_id: int) -> Change:
        """Delete row `row_id` (a customer's orders and an order's items go with it: ON DELETE
        CASCADE, each a delete event of its own)."""
        model = self._model(table)

        def write(db: Session) -> int:
            db.delete(self._get(db, model, table, row_id))
            return row_id

        return self._commit(table, "delete", write)

    def bulk(self, n: int, progress: Callable[[int, int], None] | None = None) -> list[Change]:
        """`n` random changes, each its own transaction: inserts, updates, and a few deletes of
        rows this burst inserted. Only the last is timed. `progress(done, n)` after each."""
        if n < 1:
            raise FixableError(f"bulk needs a positive number of changes, not {n}")
        done: list[Change] = []
        mine: dict[str, list[int]] = {"customer": [], "product": [], "order": []}
        for number in range(1, n + 1):
            roll = self.rng.random()
            table = self.rng.choice(list(mine))
            some_row = self._any_id(table) if 0.15 <= roll < 0.55 else None
            # Rows of ours still there: a customer's delete took its orders (ON DELETE CASCADE).
            ours = self._still_there(table, mine[table]) if roll < 0.15 and mine[table] else []
            if ours:
                change = self.delete(table, ours.pop(self.rng.randrange(len(ours))))
                mine[table] = ours
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
            query = select(model.id).order_by(model.id.desc()).limit(limit)
            return list(db.exec(query))

    def pg_row(self, table: str, row_id: int) -> pd.DataFrame:
        """The row as PostgreSQL has it now (empty if there is none)."""
        model = self._model(table)
        with Session(self.engine) as db:
            row = db.get(model, row_id)
            data = [] if row is None else [row.model_dump()]
        return pd.DataFrame(data, columns=list(VIEW_COLUMNS[table]))

    def ch_versions(self, table: str, row_id: int) -> pd.DataFrame:
        """Every version ClickHouse stores for the row, oldest first (no FINAL)."""
        return self._ch_select(table, row_id, final=False)

    def ch_final(self, table: str, row_id: int) -> pd.DataFrame:
        """The row as ClickHouse answers with FINAL: newest version, deleted rows hidden."""
        return self._ch_select(table, row_id, final=True)

    # ---- timing ---------------------------------------------------------------------------------
    @property
    def pending(self) -> list[Change]:
        """Timed changes not yet seen in FINAL (the newest 10: a stopped router must not make
        every refresh ask about hundreds)."""
        return [c for c in self.changes if c.tracked and c.latency_s is None][-10:]

    def is_visible(self, change: Change) -> bool:
        """True once ClickHouse FINAL shows this change (an insert or update with an LSN at or
        past `wal_before`; for a delete: no live row, and a delete marker at or past it)."""
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
                raise FixableError(
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
    def _model(table: str) -> Any:
        """The table class of `table` (typed Any: SQLAlchemy adds `id` and `__table__` to it)."""
        if table not in oltp.TABLES:
            raise FixableError(f"unknown table {table!r}; choose one of {', '.join(oltp.TABLES)}")
        return oltp.TABLES[table]

    @staticmethod
    def _known_columns(table: str, values: dict[str, Any]) -> None:
        allowed = set(RULES[table].model_fields) - {"createdAt"}
        unknown = sorted(set(values) - allowed)
        if unknown:
            raise FixableError(
                f"{table} has no column {', '.join(unknown)} to set; "
                f"columns: {', '.join(sorted(allowed))}"
            )

    @staticmethod
    def _validated(table: str, data: dict[str, Any]) -> SQLModel:
        """The source's business rules (min_length, gt...) checked before anything is written."""
        try:
            return RULES[table].model_validate(data)
        except ValidationError as exc:
            raise FixableError(f"{table}: {describe_validation_error(exc)}") from None

    @staticmethod
    def _get(db: Session, model: type[SQLModel], table: str, row_id: Any) -> Any:
        row = db.get(model, int(row_id))
        if row is None:
            raise FixableError(f"{table} {row_id} does not exist (any more) in PostgreSQL")
        return row

    def _commit(self, table: str, operation: str, write: Callable[[Session], int]) -> Change:
        """Run `write` in one transaction that first reads the WAL position; record the change."""
        try:
            with Session(self.engine) as db:
                wal_before = int(db.connection().execute(_WAL_NOW).scalar_one())
                row_id = write(db)
                db.commit()
        except SQLAlchemyError as exc:
            raise FixableError(f"PostgreSQL refused the {operation}: {_db_reason(exc)}") from None
        change = Change(table, operation, row_id, wal_before, time.monotonic())
        self.changes.append(change)
        return change

    def _newest(self) -> Change:
        if not self.changes:
            raise FixableError("no change made yet: insert, update or delete a row first")
        return self.changes[-1]

    def _any_id(self, table: str) -> int | None:
        with Session(self.engine) as db:
            ids = self._random_ids(db, self._model(table), 1)
        return ids[0] if ids else None

    def _still_there(self, table: str, ids: list[int]) -> list[int]:
        """Those of `ids` that PostgreSQL still has, in their order."""
        model = self._model(table)
        with Session(self.engine) as db:
            found = set(db.exec(select(model.id).where(model.id.in_(ids))))
        return [id for id in ids if id in found]

    def _random_ids(self, db: Session, model: Any, k: int) -> list[int]:
        return list(db.exec(select(model.id).order_by(func.random()).limit(k)))

    def _random_row(self, db: Session, table: str) -> dict[str, Any]:
        rng = self.rng
        if table == "customer":
            first, last = rng.choice(_FIRST), rng.choice(_LAST)
            country, city = rng.choice(_PLACES)
            # E-mails are unique: a fresh uuid part even where the lab's dice are seeded.
            email = f"{first}.{last}.{uuid.uuid4().hex[:8]}@example.com".lower()
            return {"name": f"{first} {last}", "email": email, "country": country, "city": city}
        if table == "product":
            name, category = rng.choice(_GOODS)
            price = Decimal(rng.randint(199, 9999)) / 100
            return {"name": f"{name} {rng.randint(1, 999)}", "category": category, "price": price}
        if table == "order":
            customers = self._random_ids(db, oltp.Customer, 1)
            if not customers:
                raise FixableError("an order needs a customer: insert a customer first")
            return {"customerId": customers[0], "total": Decimal(0),
                    "status": rng.choice(oltp.ORDER_STATUSES)}  # fmt: skip
        orders = self._random_ids(db, oltp.Order, 1)
        products = self._random_ids(db, oltp.Product, 1)
        if not orders or not products:
            raise FixableError("an order item needs an order and a product: insert them first")
        product = db.get(oltp.Product, products[0])
        if product is None:
            raise FixableError(f"product {products[0]} was deleted meanwhile: try again")
        price = product.price
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
                raise FixableError(f"an order needs 1 to 20 items, not {count}")
            products = self._random_ids(db, oltp.Product, count)
            if not products:
                raise FixableError("an order needs products: insert a product first")
            items = [(product, self.rng.randint(1, 4)) for product in products]
        lines = []
        for product_id, quantity in items:
            product = db.get(oltp.Product, int(product_id))
            if product is None:
                raise FixableError(f"product {product_id} does not exist")
            lines.append((int(product_id), int(quantity), Decimal(product.price)))
        return lines

    def _random_change(self, table: str, row: Any) -> dict[str, Any]:
        rng = self.rng
        if table == "customer":
            country, city = rng.choice([p for p in _PLACES if p[1] != row.city])
            return {"country": country, "city": city}
        if table == "product":
            factor = Decimal(rng.randint(80, 120)) / 100
            price = max(_CENT, (Decimal(row.price) * factor).quantize(_CENT, ROUND_HALF_UP))
            if price == Decimal(row.price):  # a factor of 1.00, or a price of a cent or so
                price += _CENT
            return {"price": price}
        if table == "order":
            statuses = oltp.ORDER_STATUSES
            if row.status not in statuses:  # a status typed by a learner: start the cycle over
                return {"status": statuses[0]}
            return {"status": statuses[(statuses.index(row.status) + 1) % len(statuses)]}
        return {"quantity": row.quantity % 9 + 1}

    def _ch_select(self, table: str, row_id: int, final: bool) -> pd.DataFrame:
        self._model(table)
        columns = VIEW_COLUMNS[table]
        try:
            frame = row_versions(self.ch, self.database, table, row_id, list(columns), final=final)
        except ClickHouseError:
            frame = pd.DataFrame()  # no table yet: the router makes it
        return frame if len(frame) else pd.DataFrame(columns=[*columns, "is_deleted", "lsn"])


def _typed(values: dict[str, Any]) -> dict[str, Any]:
    """Values typed in the panel arrive as text: blank means "not given"."""
    return {k: v for k, v in values.items() if not (isinstance(v, str) and not v.strip())}


def _db_reason(exc: SQLAlchemyError) -> str:
    cause = getattr(exc, "orig", None) or exc
    return first_line(cause)
