"""The seed's HTTP write path: FastAPI endpoints that write the kit's SQLModel entities.

`python -m cdc_kit api --port 3002` serves them (Swagger UI at /docs) on the configured
PostgreSQL, which must be running (`python -m cdc_kit up`). Every write lands in PostgreSQL
only; capture and the router carry it into ClickHouse like any other change.
Bodies and answers use the entities' own field names, which are camelCase as in the seed.
"""

from __future__ import annotations

import argparse
import json
import math
import socket
from collections.abc import Iterator
from typing import Annotated, Any, NoReturn, TypeVar

from fastapi import (
    APIRouter,
    Depends,
    FastAPI,
    HTTPException,
    Path,
    Query,
    Request,
    Response,
    status,
)
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, IntegrityError, OperationalError
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
#: A row id in the path: PostgreSQL's integer range (a larger one is refused, 422, not a 500).
RowId = Annotated[int, Path(ge=-(2**31), le=2**31 - 1)]
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


#: PostgreSQL's SQLSTATE for a unique violation (a second customer with the same e-mail).
UNIQUE_VIOLATION = "23505"


def save(db: Session, row: Row) -> Row:
    """Insert or update one row and answer with it as stored (with its id).

    A value that is already taken (a customer's e-mail) is a conflict, 409; any other rule
    of the database (a foreign key, a value out of range) refuses the body, 422.
    """
    db.add(row)
    try:
        db.commit()
    except IntegrityError as exc:
        db.rollback()
        code = status.HTTP_422_UNPROCESSABLE_CONTENT
        if getattr(exc.orig, "pgcode", None) == UNIQUE_VIOLATION:
            code = status.HTTP_409_CONFLICT
        reason = getattr(getattr(exc.orig, "diag", None), "message_detail", None)
        raise HTTPException(code, reason or first_line(exc.orig or exc)) from exc
    db.refresh(row)
    return row


def storable(value: Any, where: str = "body") -> None:
    """Refuse (422) what PostgreSQL cannot store, with the reason, before it is written.

    JSON lets a body carry a NUL character, a lone surrogate (half of a UTF-16 pair) and, in
    Python's parser, NaN and Infinity; a text column takes none of the first two, a NUMERIC
    column none of the last two, and an INTEGER column stops at 2,147,483,647.
    """
    if isinstance(value, dict):
        for key, item in value.items():
            storable(item, f"{where}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            storable(item, f"{where}[{index}]")
    elif isinstance(value, str):
        if "\x00" in value:
            refuse(where, "text must not contain the NUL character (\\u0000)")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            refuse(where, "text is not valid Unicode (a lone surrogate such as \\ud800)")
    elif isinstance(value, float) and not math.isfinite(value):
        refuse(where, f"{value} is not a number PostgreSQL can store")
    elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > INT_MAX:
        refuse(where, f"{value} is out of range (PostgreSQL integers stop at {INT_MAX:,})")


INT_MAX = 2**31 - 1


def refuse(where: str, reason: str) -> NoReturn:
    raise HTTPException(
        status.HTTP_422_UNPROCESSABLE_CONTENT,
        [{"loc": where.split("."), "msg": reason, "type": "value_error"}],
    )


async def storable_body(request: Request) -> None:
    """A dependency of every write: the raw JSON body, checked by `storable` before the models
    parse it (a NaN would otherwise reach the database as a Decimal)."""
    if request.method in ("POST", "PATCH", "PUT"):
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else None
        except (ValueError, UnicodeDecodeError):
            return  # FastAPI answers malformed JSON with its own 422
        storable(body)


def list_rows(db: Session, model: type[Row], limit: int, offset: int) -> list[Row]:
    return list(db.exec(select(model).order_by(model.id).offset(offset).limit(limit)))  # type: ignore[attr-defined]


router = APIRouter(prefix="/api", dependencies=[Depends(storable_body)])


# ---- customers -----------------------------------------------------------------------
@router.post("/customers", response_model=Customer, status_code=status.HTTP_201_CREATED)
def create_customer(body: CustomerBase, db: DB) -> Any:
    return save(db, Customer.model_validate(body))


@router.get("/customers", response_model=list[Customer])
def list_customers(db: DB, limit: Limit = 100, offset: Offset = 0) -> Any:
    return list_rows(db, Customer, limit, offset)


@router.get("/customers/{customer_id}", response_model=Customer)
def get_customer(customer_id: RowId, db: DB) -> Any:
    return get_or_404(db, Customer, customer_id)


# ---- products ------------------------------------------------------------------------
@router.post("/products", response_model=Product, status_code=status.HTTP_201_CREATED)
def create_product(body: ProductBase, db: DB) -> Any:
    return save(db, Product.model_validate(body))


@router.get("/products", response_model=list[Product])
def list_products(db: DB, limit: Limit = 100, offset: Offset = 0) -> Any:
    return list_rows(db, Product, limit, offset)


@router.get("/products/{product_id}", response_model=Product)
def get_product(product_id: RowId, db: DB) -> Any:
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
def get_order(order_id: RowId, db: DB) -> Any:
    return get_or_404(db, Order, order_id)


@router.patch("/orders/{order_id}", response_model=Order)
def update_order_status(order_id: RowId, body: OrderStatusUpdate, db: DB) -> Any:
    order = get_or_404(db, Order, order_id)
    order.status = body.status
    return save(db, order)


@router.delete("/orders/{order_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_order(order_id: RowId, db: DB) -> Response:
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
def get_order_item(item_id: RowId, db: DB) -> Any:
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

    @app.exception_handler(DataError)
    async def refused_by_the_database(request: Request, exc: DataError) -> JSONResponse:
        """A value PostgreSQL refuses that no check above caught: the body's fault, 422."""
        return JSONResponse(
            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
            content={"detail": first_line(exc.orig or exc)},
        )

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
        reason = first_line(exc.orig or exc)
        raise FixableError(
            f"api: cannot reach PostgreSQL at {s.pg_host}:{s.pg_port} ({reason}); "
            "start the stack first: python -m cdc_kit up"
        ) from exc
    uvicorn.run(create_app(engine), host=args.host, port=args.port, log_level=args.log_level)
    return 0
