"""A seeded random workload on the lesson tables, and a wait for PostgreSQL == ClickHouse."""

from __future__ import annotations

import random
import time
from decimal import Decimal
from typing import Any

from sqlalchemy import text

from cdc_kit import oltp, reconcile
from cdc_kit.stack import Stack


class Workload:
    """Random but reproducible changes; remembers which ids exist so every change applies."""

    def __init__(self, engine: Any, seed: int) -> None:
        self.engine = engine
        self.rng = random.Random(seed)
        self.ids: dict[str, set[int]] = {}
        with engine.connect() as conn:
            for table in oltp.TABLES:
                rows = conn.execute(text(f'SELECT id FROM "{table}"'))
                self.ids[table] = {row[0] for row in rows}
        self.next_id = 1 + max((max(ids) for ids in self.ids.values() if ids), default=0)

    def _new_id(self) -> int:
        self.next_id += 1
        return self.next_id

    def run(self, operations: int, between: Any = None) -> None:
        for n in range(operations):
            with self.engine.begin() as conn:
                for _ in range(self.rng.choice([1, 1, 1, 3])):  # some multi-change transactions
                    self._one(conn)
            if between is not None:
                between(n)
        # The workload chose its own ids: later inserts that take theirs from the sequences
        # (lessons, the widget lab) on the shared tables must not collide with them.
        with self.engine.begin() as conn:
            oltp.advance_id_sequences(conn)

    def _after_delete(self, conn: Any) -> None:
        """A delete cascades (a customer's orders, their items; a product's items): re-read
        which orders and items survive, inside the transaction, whose next change may pick one."""
        for table in ("order", "orderitem"):
            rows = conn.execute(text(f'SELECT id FROM "{table}"'))
            self.ids[table] = {row[0] for row in rows}

    def _one(self, conn: Any) -> None:
        rng = self.rng
        kind = rng.choices(["insert", "update", "delete", "pk"], weights=[45, 35, 12, 8])[0]
        table = rng.choice(list(oltp.TABLES))
        if kind == "insert" or not self.ids[table]:
            self._insert(conn, table)
        elif kind == "update":
            self._update(conn, table, rng.choice(sorted(self.ids[table])))
        elif kind == "delete":
            row_id = rng.choice(sorted(self.ids[table]))
            conn.execute(text(f'DELETE FROM "{table}" WHERE id = :id'), {"id": row_id})
            self.ids[table].discard(row_id)
            self._after_delete(conn)
        else:  # a primary-key change (orderitem: no rows reference it)
            if not self.ids["orderitem"]:
                return
            old = rng.choice(sorted(self.ids["orderitem"]))
            new = self._new_id()
            conn.execute(
                text("UPDATE orderitem SET id = :new WHERE id = :old"), {"new": new, "old": old}
            )
            self.ids["orderitem"] = (self.ids["orderitem"] - {old}) | {new}

    def _insert(self, conn: Any, table: str) -> None:
        rng = self.rng
        row_id = self._new_id()
        if table == "customer":
            values = {
                "id": row_id,
                "email": f"c{row_id}@example.com",
                "name": f"C {row_id}",
                "country": rng.choice(["US", "DE", "JP"]),
                "city": "Town",
                "bio": self._bio(),
            }
        elif table == "product":
            values = {
                "id": row_id,
                "name": f"P {row_id}",
                "category": rng.choice(["a", "b"]),
                "price": Decimal(rng.randint(100, 99999)) / 100,
                "description": None,
            }
        elif table == "order":
            if not self.ids["customer"]:
                return self._insert(conn, "customer")
            values = {
                "id": row_id,
                "customerId": rng.choice(sorted(self.ids["customer"])),
                "orderDate": oltp.utcnow(),
                "total": Decimal("0.00"),
                "status": "pending",
            }
        else:
            if not self.ids["order"] or not self.ids["product"]:
                return self._insert(conn, rng.choice(["order", "product"]))
            values = {
                "id": row_id,
                "orderId": rng.choice(sorted(self.ids["order"])),
                "productId": rng.choice(sorted(self.ids["product"])),
                "quantity": rng.randint(1, 9),
                "price": Decimal("9.99"),
            }
        values["createdAt"] = oltp.utcnow()
        columns = ", ".join(f'"{c}"' for c in values)
        params = ", ".join(f":{c}" for c in values)
        conn.execute(text(f'INSERT INTO "{table}" ({columns}) VALUES ({params})'), values)
        self.ids[table].add(row_id)

    def _bio(self) -> str | None:
        roll = self.rng.random()
        if roll < 0.3:
            return None
        if roll < 0.4:
            return "toast " * 20000  # ~120 kB: stored out of line, later sent as unchanged
        return f"bio {self.rng.randint(0, 999)}"

    def _update(self, conn: Any, table: str, row_id: int) -> None:
        rng = self.rng
        changes = {
            "customer": lambda: {"city": rng.choice(["Oslo", "Lima", "Kyiv"])}
            if rng.random() < 0.6
            else {"bio": self._bio()},
            "product": lambda: {"price": Decimal(rng.randint(100, 99999)) / 100,
                                "description": rng.choice([None, "nice", "great"])},
            "order": lambda: {"status": rng.choice(oltp.ORDER_STATUSES),
                              "total": Decimal(rng.randint(0, 99999)) / 100},
            "orderitem": lambda: {"quantity": rng.randint(1, 9)},
        }[table]()  # fmt: skip
        assignments = ", ".join(f'"{c}" = :{c}' for c in changes)
        conn.execute(
            text(f'UPDATE "{table}" SET {assignments} WHERE id = :id'),
            {**changes, "id": row_id},
        )


def wait_until_reconciled(stack: Stack, timeout: float = 90) -> dict:
    """Poll `compare` until it is empty (the pipeline caught up) or time runs out."""
    engine = stack.pg_engine()
    ch = stack.clickhouse()
    deadline = time.monotonic() + timeout
    diff = reconcile.compare(engine, ch)
    while diff and time.monotonic() < deadline:
        time.sleep(1)
        diff = reconcile.compare(engine, ch)
    engine.dispose()
    return diff
