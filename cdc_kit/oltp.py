"""The application's tables in PostgreSQL, as SQLModel classes (the OLTP side).

Each entity has a `*Base` class with the columns and their business rules, and a table class
that adds the primary key. The OLAP models in `cdc_kit.olap` reuse the same `*Base` classes,
so a column is declared once for both sides.

    customer 1───* order 1───* orderitem *───1 product
"""

from __future__ import annotations

import csv
import logging
import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

from sqlalchemy import func, select, text
from sqlalchemy.dialects import postgresql
from sqlmodel import Field, Session, SQLModel
from tqdm.auto import tqdm

DATA_DIR = Path(__file__).resolve().parent.parent / "data"

log = logging.getLogger("cdc_kit.oltp")


def utcnow() -> datetime:
    """Now, timezone-aware in UTC (SQLModel stores datetimes as `timestamptz`).

    The seed wrote `default=datetime.now()`, which Python evaluates ONCE at import: every row
    got the same timestamp. `default_factory` calls this for each new row instead.
    """
    return datetime.now(UTC)


def created_now() -> Any:
    """A timestamp column that defaults to now() in Python AND in PostgreSQL.

    `default_factory` serves SQLModel objects; the server default serves raw SQL that leaves
    the column out (`INSERT INTO customer (email, name, country, city) VALUES (...)`).
    """
    return Field(default_factory=utcnow, sa_column_kwargs={"server_default": text("now()")})


class CustomerBase(SQLModel):
    email: str = Field(min_length=3, max_length=255, unique=True, index=True)  # as in the seed
    name: str = Field(min_length=1, max_length=255)
    country: str = Field(min_length=2, max_length=100)
    city: str = Field(max_length=100)
    #: Long free text: values over ~2 kB are stored out of line (TOAST) — lesson material.
    bio: str | None = Field(default=None)
    createdAt: datetime = created_now()


class Customer(CustomerBase, table=True):
    __tablename__ = "customer"
    id: int | None = Field(default=None, primary_key=True)


class ProductBase(SQLModel):
    name: str = Field(min_length=1, max_length=255)
    category: str = Field(min_length=1, max_length=100)
    price: Decimal = Field(gt=0, max_digits=10, decimal_places=2)
    description: str | None = Field(default=None)
    createdAt: datetime = created_now()


class Product(ProductBase, table=True):
    __tablename__ = "product"
    id: int | None = Field(default=None, primary_key=True)


ORDER_STATUSES = ("pending", "paid", "shipped", "delivered", "cancelled")


class OrderBase(SQLModel):
    customerId: int = Field(foreign_key="customer.id", ondelete="CASCADE")
    orderDate: datetime = created_now()
    total: Decimal = Field(ge=0, max_digits=10, decimal_places=2)
    status: str = Field(
        default="pending", max_length=20, sa_column_kwargs={"server_default": "pending"}
    )
    createdAt: datetime = created_now()


class Order(OrderBase, table=True):
    __tablename__ = "order"  # a reserved word in SQL: every raw query must quote it
    id: int | None = Field(default=None, primary_key=True)


class OrderItemBase(SQLModel):
    orderId: int = Field(foreign_key="order.id", ondelete="CASCADE")
    productId: int = Field(foreign_key="product.id", ondelete="CASCADE")
    quantity: int = Field(gt=0)
    price: Decimal = Field(gt=0, max_digits=10, decimal_places=2)
    createdAt: datetime = created_now()


class OrderItem(OrderItemBase, table=True):
    __tablename__ = "orderitem"
    id: int | None = Field(default=None, primary_key=True)


#: Source table name -> SQLModel table class, in an order that respects foreign keys (typed Any:
#: SQLAlchemy gives each class its `__table__` and column attributes at runtime).
TABLES: dict[str, Any] = {
    "customer": Customer,
    "product": Product,
    "order": Order,
    "orderitem": OrderItem,
}


def create_all(engine: Any) -> None:
    """Create the four tables (if missing), and give existing ones their server defaults.

    Tables made by an older kit lack the server defaults; adding them keeps raw SQL that
    leaves `createdAt` out working there too.
    """
    tables = [model.__table__ for model in TABLES.values()]
    SQLModel.metadata.create_all(engine, tables=tables)
    with engine.begin() as conn:
        missing = {
            (table, column)
            for table, column in conn.execute(
                text(
                    "SELECT table_name, column_name FROM information_schema.columns "
                    "WHERE table_schema = 'public' AND column_default IS NULL"
                )
            )
        }
        repeated = make_email_unique(conn)
        if repeated:
            log.warning(email_warning(repeated))
        quote = engine.dialect.identifier_preparer.quote
        for table in tables:
            for column in table.columns:
                default = column.server_default
                if default is not None and (table.name, column.name) in missing:
                    value = getattr(default.arg, "text", None) or f"'{default.arg}'"
                    conn.execute(
                        text(
                            f"ALTER TABLE {quote(table.name)} "  # quoted identifiers
                            f"ALTER COLUMN {quote(column.name)} SET DEFAULT {value}"
                        )
                    )


def make_email_unique(conn: Any) -> list[str]:
    """Give a lab's customer table the seed's unique e-mail; the e-mails that repeat, if any.

    Tables made by an older kit let two customers share an e-mail. The unique index is added
    unless the lab already holds duplicates: those rows are a learner's, so they stay, and the
    caller says which e-mails repeat. Nothing to do without a customer table.
    """
    if not conn.execute(text("SELECT to_regclass('public.customer')")).scalar():
        return []
    if conn.execute(text("SELECT to_regclass('public.ix_customer_email')")).scalar():
        return []
    duplicates = conn.execute(
        text("SELECT email FROM customer GROUP BY email HAVING count(*) > 1 ORDER BY 1 LIMIT 3")
    ).scalars().all()
    if not duplicates:
        conn.execute(text("CREATE UNIQUE INDEX ix_customer_email ON customer (email)"))
    return list(duplicates)


def email_warning(repeated: list[str]) -> str:
    """One line about e-mails that keep the unique index away."""
    return (
        f"customer e-mails repeat in this lab ({', '.join(repeated)}): delete the extra rows, "
        "then run `python -m cdc_kit up` again, to get the seed's unique e-mail"
    )


def drop_all(engine: Any) -> None:
    SQLModel.metadata.drop_all(engine, tables=[model.__table__ for model in TABLES.values()])


@contextmanager
def session(engine: Any) -> Iterator[Session]:
    """A SQLModel session that commits on success and rolls back on error."""
    with Session(engine) as db:
        try:
            yield db
            db.commit()
        except Exception:
            db.rollback()
            raise


def _read_csv(name: str) -> list[dict[str, str]]:
    with open(DATA_DIR / f"{name}.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def sample_rows(scale: int = 1, seed: int = 42) -> dict[str, Sequence[SQLModel]]:
    """Deterministic sample rows: the CSVs in data/, plus generated ones when scale > 1."""
    rng = random.Random(seed)
    base = datetime(2026, 1, 1, tzinfo=UTC)
    customers = [Customer.model_validate(row) for row in _read_csv("customers")]
    products = [Product.model_validate(row) for row in _read_csv("products")]
    orders = [Order.model_validate(row) for row in _read_csv("orders")]
    items = [OrderItem.model_validate(row) for row in _read_csv("orderitems")]
    for obj in [*customers, *products, *orders, *items]:
        obj.createdAt = base
    for n in range(len(customers) + 1, len(customers) * scale + 1):
        customers.append(
            Customer(
                id=n,
                email=f"customer{n}@example.com",
                name=f"Customer {n}",
                country=rng.choice(["US", "DE", "FR", "NL", "JP", "BR"]),
                city=rng.choice(["Springfield", "Berlin", "Lyon", "Utrecht", "Osaka", "Recife"]),
                createdAt=base,
            )
        )
    order_id = len(orders)
    item_id = len(items)
    for _ in range(len(orders) * (scale - 1)):
        order_id += 1
        order = Order(
            id=order_id,
            customerId=rng.randint(1, len(customers)),
            orderDate=base + timedelta(minutes=order_id),
            total=Decimal("0.00"),
            status=rng.choice(ORDER_STATUSES),
            createdAt=base,
        )
        total = Decimal("0.00")
        for _ in range(rng.randint(1, 4)):
            item_id += 1
            product = rng.choice(products)
            quantity = rng.randint(1, 5)
            items.append(
                OrderItem(
                    id=item_id,
                    orderId=order_id,
                    productId=cast(int, product.id),
                    quantity=quantity,
                    price=product.price,
                    createdAt=base,
                )
            )
            total += Decimal(product.price) * quantity
        order.total = total
        orders.append(order)
    return {"customer": customers, "product": products, "order": orders, "orderitem": items}


def load_sample_data(engine: Any, scale: int = 1, progress: bool = True) -> dict[str, int]:
    """Make sure every sample row is there; returns the rows inserted per table.

    Safe from any state a learner can leave: rows are inserted by id in foreign-key order,
    an id (or e-mail) already taken is kept as it is (`ON CONFLICT DO NOTHING`), a sample row
    a learner deleted comes back, and the sequences move past the sample ids afterwards. An
    order or item whose parent row is gone and cannot come back (its id now belongs to another
    row that a unique rule keeps out) is left out rather than failing the whole load.
    """
    rows = sample_rows(scale)
    loaded: dict[str, int] = {}
    present: dict[str, set[int]] = {}
    with engine.begin() as conn:
        for name, objects in tqdm(rows.items(), desc="sample data", disable=not progress):
            table = TABLES[name].__table__
            values = [obj.model_dump() for obj in objects]
            values = [row for row in values if _parents_present(name, row, present)]
            before = conn.execute(select(func.count()).select_from(table)).scalar_one()
            for start in range(0, len(values), 5000):
                statement = postgresql.insert(table).on_conflict_do_nothing()
                conn.execute(statement, values[start : start + 5000])
            present[name] = set(conn.execute(select(table.c.id)).scalars())
            loaded[name] = len(present[name]) - before
        advance_id_sequences(conn, [name for name, count in loaded.items() if count])
    return loaded


#: Child table -> (column, parent table) of each foreign key.
_PARENTS = {
    "order": (("customerId", "customer"),),
    "orderitem": (("orderId", "order"), ("productId", "product")),
}


def _parents_present(name: str, row: dict[str, Any], present: dict[str, set[int]]) -> bool:
    return all(row[column] in present[parent] for column, parent in _PARENTS.get(name, ()))


def advance_id_sequences(conn: Any, tables: list[str] | None = None) -> None:
    """Move each table's id sequence past its largest id, after rows with explicit ids.

    Without it the next insert that takes its id from the sequence collides with them.
    `conn`: a SQLAlchemy connection (in a session: `session.connection()`).
    """
    quote = conn.dialect.identifier_preparer.quote
    for name in TABLES if tables is None else tables:
        table = quote(name)  # "order" is a reserved word
        sql = f"SELECT setval(pg_get_serial_sequence(:t, 'id'), (SELECT COALESCE(MAX(id), 0) + 1 FROM {table}), false)"  # noqa: S608, E501 - quoted identifier
        conn.execute(text(sql).bindparams(t=table))
