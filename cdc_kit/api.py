"""The seed's HTTP write path: FastAPI endpoints that write the kit's SQLModel entities.

`python -m cdc_kit api --port 3002` serves them (Swagger UI at /docs) on the configured
PostgreSQL, which must be running (`python -m cdc_kit up`). Every write lands in PostgreSQL
only; capture and the router carry it into ClickHouse like any other change.
Bodies and answers use the entities' own field names, which are camelCase as in the seed.
"""

from __future__ import annotations

import argparse
import socket
from collections.abc import Iterator
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, Response, status
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlmodel import Field, Session, SQLModel, select

from cdc_kit import oltp
from cdc_kit.errors import FixableError, first_line
from cdc_kit.oltp import (
    Customer,
    CustomerBase,
    Order,
    OrderBase,
    OrderItem,
    OrderItemBase,
    Product,
    ProductBase,
)

DEFAULT_PORT = 3002

Row = TypeVar("Row", bound=SQLModel)


class OrderStatusUpdate(SQLModel):
    """The body of `PATCH /api/orders/{id}`: only the status changes."""

    status: str = Field(min_length=1, max_length=20)


def get_session(request: Request) -> Iterator[Session]:
    """One database session per request, on the engine the app was made with."""
    with Session(request.app.state.engine) as db:
        yield db


DB = Annotated[Session, Depends(get_session)]
Limit = Annotated[int, Query(ge=1, le=10_000, description="at most this many rows")]
Offset = Annotated[int, Query(ge=0, description="skip this many rows (ordered by id)")]


def get_or_404(db: Session, model: type[Row], row_id: int) -> Row:
    row = db.get(model, row_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"{model.__tablename__} {row_id} not found")
    return row


def require(db: Session, model: type[SQLModel], field: str, row_id: int) -> None:
    """A foreign key must point at an existing row: say which one is missing (422)."""
    if db.get(model, row_id) is None:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"{field} {row_id}: no {model.__tablename__} with this id",
        )


def save(db: Session, row: Row) -> Row:
    """Insert or update one row and answer with it as stored (with its id)."""
    db.add(row)
    try:
        db.commit()
    except IntegrityError as exc:
        db.rollback()
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, first_line(exc.orig)) from exc
    db.refresh(row)
    return row


def list_rows(db: Session, model: type[Row], limit: int, offset: int) -> list[Row]:
    return list(db.exec(select(model).order_by(model.id).offset(offset).limit(limit)))  # type: ignore[attr-defined]


router = APIRouter(prefix="/api")


# ---- customers -----------------------------------------------------------------------
@router.post("/customers", response_model=Customer, status_code=status.HTTP_201_CREATED)
def create_customer(body: CustomerBase, db: DB) -> Any:
    return save(db, Customer.model_validate(body))


@router.get("/customers", response_model=list[Customer])
def list_customers(db: DB, limit: Limit = 100, offset: Offset = 0) -> Any:
    return list_rows(db, Customer, limit, offset)


@router.get("/customers/{customer_id}", response_model=Customer)
def get_customer(customer_id: int, db: DB) -> Any:
    return get_or_404(db, Customer, customer_id)


# ---- products ------------------------------------------------------------------------
@router.post("/products", response_model=Product, status_code=status.HTTP_201_CREATED)
def create_product(body: ProductBase, db: DB) -> Any:
    return save(db, Product.model_validate(body))


@router.get("/products", response_model=list[Product])
def list_products(db: DB, limit: Limit = 100, offset: Offset = 0) -> Any:
    return list_rows(db, Product, limit, offset)


@router.get("/products/{product_id}", response_model=Product)
def get_product(product_id: int, db: DB) -> Any:
    return get_or_404(db, Product, product_id)


# ---- orders --------------------------------------------------------------------------
@router.post("/orders", response_model=Order, status_code=status.HTTP_201_CREATED)
def create_order(body: OrderBase, db: DB) -> Any:
    require(db, Customer, "customerId", body.customerId)
    return save(db, Order.model_validate(body))


@router.get("/orders", response_model=list[Order])
def list_orders(db: DB, limit: Limit = 100, offset: Offset = 0) -> Any:
    return list_rows(db, Order, limit, offset)


@router.get("/orders/{order_id}", response_model=Order)
def get_order(order_id: int, db: DB) -> Any:
    return get_or_404(db, Order, order_id)


@router.patch("/orders/{order_id}", response_model=Order)
def update_order_status(order_id: int, body: OrderStatusUpdate, db: DB) -> Any:
    order = get_or_404(db, Order, order_id)
    order.status = body.status
    return save(db, order)


@router.delete("/orders/{order_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_order(order_id: int, db: DB) -> Response:
    """Deletes the order (its items go with it: ON DELETE CASCADE); ClickHouse marks it deleted."""
    db.delete(get_or_404(db, Order, order_id))
    db.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# ---- order items ---------------------------------------------------------------------
@router.post("/order-items", response_model=OrderItem, status_code=status.HTTP_201_CREATED)
def create_order_item(body: OrderItemBase, db: DB) -> Any:
    require(db, Order, "orderId", body.orderId)
    require(db, Product, "productId", body.productId)
    return save(db, OrderItem.model_validate(body))


@router.get("/order-items", response_model=list[OrderItem])
def list_order_items(db: DB, limit: Limit = 100, offset: Offset = 0) -> Any:
    return list_rows(db, OrderItem, limit, offset)


@router.get("/order-items/{item_id}", response_model=OrderItem)
def get_order_item(item_id: int, db: DB) -> Any:
    return get_or_404(db, OrderItem, item_id)


# ---- the app -------------------------------------------------------------------------
def create_app(engine: Any) -> FastAPI:
    """The API on a SQLAlchemy engine (the tables must exist: `oltp.create_all`)."""
    app = FastAPI(
        title="cdc-kit write API",
        description="The seed's endpoints: writes go to PostgreSQL, CDC carries them on.",
        version="1.0",
    )
    app.state.engine = engine

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "healthy"}

    app.include_router(router)
    return app


def check_port_free(host: str, port: int) -> None:
    """One clear line instead of uvicorn's traceback when the port is taken."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise FixableError(
                f"api: port {port} on {host} is not available ({exc.strerror}); "
                "choose another with --port"
            ) from exc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cdc_kit api", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)

    import uvicorn

    from cdc_kit import clients
    from cdc_kit.config import get_settings

    check_port_free(args.host, args.port)
    s = get_settings()
    engine = clients.pg_engine(s)
    try:
        oltp.create_all(engine)  # like the seed's init_db.py: safe to run again
    except OperationalError as exc:
        raise FixableError(
            f"api: cannot reach PostgreSQL at {s.pg_host}:{s.pg_port} ({first_line(exc.orig)}); "
            "start the stack first: python -m cdc_kit up"
        ) from exc
    uvicorn.run(create_app(engine), host=args.host, port=args.port, log_level=args.log_level)
    return 0
