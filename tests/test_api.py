"""The seed's HTTP write path: a real `python -m cdc_kit api` server on the session services.

The seed's curl bodies are sent exactly as written; what the API writes must reach ClickHouse
through capture and a router, like any other change.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from clickhouse_connect.driver.binding import quote_identifier
from clickhouse_connect.driver.exceptions import DatabaseError
from psycopg2 import sql

from cdc_kit.config import Settings, settings_env
from cdc_kit.router import Router
from cdc_kit.stack import Stack
from tests.conftest import (
    REPO,
    drop_slot_and_publication,
    isolated_settings,
    running_api,
    settings_from,
    stop,
)

# The seed's "Create Test Data" commands, byte for byte (README, "What to Verify").
SEED_CUSTOMER = """{
    "email": "jane@example.com",
    "name": "Jane Doe",
    "country": "USA",
    "city": "San Francisco"
  }"""
SEED_PRODUCT = """{
    "name": "Wireless Mouse",
    "category": "Electronics",
    "price": "29.99"
  }"""
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def api_lab(stack: Stack, stack_env: dict[str, str]) -> Iterator[Settings]:
    """A lab of the API's own on the session services: its own PostgreSQL database, slot,
    topics and ClickHouse database, with its own `python -m cdc_kit capture` process.

    The API creates rows the lessons' sample data does not expect, so it never writes to the
    session's lesson database.
    """
    tag = uuid.uuid4().hex[:8]
    database = f"api_{tag}"
    admin = stack.pg_connection()
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    settings = isolated_settings(settings_from({**stack_env, "CDC_KIT_PG_DATABASE": database}), tag)
    capture = subprocess.Popen(
        [sys.executable, "-m", "cdc_kit", "capture"],
        env=settings_env(settings),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield settings
    finally:
        stop(capture)
        lab = Stack(settings)
        conn = lab.pg_connection()
        conn.autocommit = True
        drop_slot_and_publication(conn, settings)
        conn.close()
        with admin.cursor() as cur:
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(database)))
        admin.close()
        ch_database = quote_identifier(settings.clickhouse_database)
        stack.clickhouse().command(f"DROP DATABASE IF EXISTS {ch_database}")


@pytest.fixture(scope="module")
def api(api_lab: Settings) -> Iterator[httpx.Client]:
    """`python -m cdc_kit api --port N`, started as a learner starts it."""
    with running_api(api_lab) as client:
        yield client


def post(api: httpx.Client, path: str, body: dict[str, Any]) -> dict[str, Any]:
    answer = api.post(path, json=body)
    assert answer.status_code == 201, answer.text
    return answer.json()


def test_health_answers_as_the_seed_says(api: httpx.Client) -> None:
    answer = api.get("/health")
    assert answer.status_code == 200
    assert answer.json() == {"status": "healthy"}


def test_seed_curl_bodies_create_rows_that_answer_with_their_id(api: httpx.Client) -> None:
    customer = api.post("/api/customers", headers=JSON, content=SEED_CUSTOMER)
    product = api.post("/api/products", headers=JSON, content=SEED_PRODUCT)
    assert customer.status_code == 201, customer.text
    assert product.status_code == 201, product.text
    customer_json, product_json = customer.json(), product.json()
    assert isinstance(customer_json["id"], int)
    assert customer_json["email"] == "jane@example.com"
    assert customer_json["city"] == "San Francisco"
    assert "createdAt" in customer_json  # the entities' camelCase names, as the seed answers
    assert product_json["price"] == "29.99"
    assert api.get(f"/api/customers/{customer_json['id']}").json() == customer_json
    assert customer_json in api.get("/api/customers", params={"limit": 10_000}).json()


def test_orders_are_created_patched_and_deleted(api: httpx.Client) -> None:
    customer = post(
        api, "/api/customers", {"email": "a@b.c", "name": "A", "country": "NL", "city": ""}
    )
    product = post(api, "/api/products", {"name": "Mug", "category": "Kitchen", "price": "7.50"})
    order = post(api, "/api/orders", {"customerId": customer["id"], "total": "15.00"})
    assert order["status"] == "pending"
    item = post(
        api,
        "/api/order-items",
        {"orderId": order["id"], "productId": product["id"], "quantity": 2, "price": "7.50"},
    )
    assert item["orderId"] == order["id"]
    assert item in api.get("/api/order-items", params={"limit": 10_000}).json()

    patched = api.patch(f"/api/orders/{order['id']}", json={"status": "shipped"})
    assert patched.status_code == 200, patched.text
    assert patched.json()["status"] == "shipped"
    assert api.get(f"/api/orders/{order['id']}").json()["status"] == "shipped"

    assert api.delete(f"/api/orders/{order['id']}").status_code == 204
    assert api.get(f"/api/orders/{order['id']}").status_code == 404
    assert api.get(f"/api/order-items/{item['id']}").status_code == 404  # ON DELETE CASCADE


@pytest.mark.parametrize(
    ("path", "body", "reason"),
    [
        ("/api/products", {"name": "X", "category": "Y", "price": "abc"}, "decimal"),
        ("/api/products", {"name": "X", "category": "Y", "price": "-1"}, "greater than 0"),
        ("/api/customers", {"name": "No email", "country": "NL", "city": ""}, "email"),
        ("/api/orders", {"customerId": 999_999_999, "total": "1.00"}, "customerId 999999999"),
        (
            "/api/order-items",
            {"orderId": 999_999_999, "productId": 1, "quantity": 1, "price": "1.00"},
            "orderId 999999999",
        ),
    ],
    ids=[
        "price-not-a-number",
        "negative-price",
        "missing-email",
        "unknown-customer",
        "unknown-order",
    ],
)
def test_bad_input_gets_422_with_the_reason(
    api: httpx.Client, path: str, body: dict[str, Any], reason: str
) -> None:
    answer = api.post(path, json=body)
    assert answer.status_code == 422, answer.text
    assert reason in answer.text.lower() or reason in answer.text


def test_bad_json_and_bad_status_get_422(api: httpx.Client) -> None:
    assert api.post("/api/customers", headers=JSON, content="{not json").status_code == 422
    customer = post(
        api, "/api/customers", {"email": "s@t.u", "name": "S", "country": "DE", "city": ""}
    )
    order = post(api, "/api/orders", {"customerId": customer["id"], "total": "0"})
    answer = api.patch(f"/api/orders/{order['id']}", json={"status": "x" * 21})
    assert answer.status_code == 422
    assert "20 characters" in answer.text


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/customers/999999999"),
        ("GET", "/api/products/999999999"),
        ("GET", "/api/orders/999999999"),
        ("PATCH", "/api/orders/999999999"),
        ("DELETE", "/api/orders/999999999"),
        ("GET", "/api/order-items/999999999"),
    ],
)
def test_unknown_ids_get_404(api: httpx.Client, method: str, path: str) -> None:
    body = {"status": "paid"} if method == "PATCH" else None
    answer = api.request(method, path, json=body)
    assert answer.status_code == 404, answer.text
    assert "999999999 not found" in answer.json()["detail"]


def test_swagger_ui_and_schema_are_served(api: httpx.Client) -> None:
    assert "swagger-ui" in api.get("/docs").text
    paths = api.get("/openapi.json").json()["paths"]
    for path in (
        "/health",
        "/api/customers",
        "/api/products",
        "/api/orders/{order_id}",
        "/api/order-items",
    ):
        assert path in paths
    assert {"patch", "delete", "get"} <= set(paths["/api/orders/{order_id}"])


def route_until(router: Router, check: Any, timeout: float = 120.0) -> None:
    """Step the router until `check()` holds; generous, because CI machines are busy."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "the API's writes did not reach ClickHouse in time"
        router.step(timeout_ms=200)


def test_api_writes_arrive_in_clickhouse(api: httpx.Client, api_lab: Settings) -> None:
    email = f"api-{uuid.uuid4().hex[:8]}@example.com"
    customer = post(
        api, "/api/customers", {"email": email, "name": "Api Test", "country": "FR", "city": "Lyon"}
    )
    order = post(api, "/api/orders", {"customerId": customer["id"], "total": "42.00"})
    api.patch(f"/api/orders/{order['id']}", json={"status": "paid"})
    lab = Stack(api_lab)
    ch = lab.clickhouse()  # the lab's own ClickHouse database

    def one(query: str, row_id: int) -> list[tuple]:
        try:
            return ch.query(query, parameters={"id": row_id}).result_rows
        except DatabaseError as exc:
            if "UNKNOWN_TABLE" in str(exc) or "UNKNOWN_DATABASE" in str(exc):
                return []  # the router creates them when it meets the first row
            raise

    router = Router(lab)  # its group is the one the lab's capture waits for
    try:
        route_until(
            router,
            lambda: (
                one("SELECT email FROM customer FINAL WHERE id = {id:UInt64}", customer["id"])
                == [(email,)]
            ),
        )
        route_until(
            router,
            lambda: (
                one('SELECT status FROM "order" FINAL WHERE id = {id:UInt64}', order["id"])
                == [("paid",)]
            ),
        )
        api.delete(f"/api/orders/{order['id']}")
        route_until(
            router,
            lambda: (
                one('SELECT count() FROM "order" FINAL WHERE id = {id:UInt64}', order["id"])
                == [(0,)]
            ),
        )
        deleted = one('SELECT max(is_deleted) FROM "order" WHERE id = {id:UInt64}', order["id"])
        assert deleted == [(1,)]  # the soft delete the seed describes
    finally:
        router.close()


def test_readme_curl_commands_work_as_written(api: httpx.Client) -> None:
    """The README's copy of the seed's curl commands, run by curl against this server."""
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    readme = (REPO / "README.md").read_text()
    block = re.search(r"The seed's commands work as written:\n\n```bash\n(.*?)```", readme, re.S)
    assert block, "README lost the seed's curl commands"
    script = block[1].replace("localhost:3002", f"{api.base_url.host}:{api.base_url.port}")
    ran = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], capture_output=True, text=True, timeout=60
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.startswith('{"status":"healthy"}')
    assert '"price":"29.99"' in ran.stdout
    # Jane is made here, or (after the test above made her) refused: e-mails are unique.
    made = '"email":"jane@example.com"' in ran.stdout
    refused = "Key (email)=(jane@example.com) already exists." in ran.stdout
    assert made != refused, ran.stdout
    assert ran.stdout.count('"id":') == (2 if made else 1)


def test_a_second_customer_with_the_same_email_is_a_conflict(api: httpx.Client) -> None:
    """As in the seed, an e-mail belongs to one customer: its walkthrough run twice no longer
    makes a second Jane Doe."""
    body = {"email": f"twice-{uuid.uuid4().hex[:8]}@example.com", "name": "Twice",
            "country": "NL", "city": "Delft"}  # fmt: skip
    first = api.post("/api/customers", json=body)
    again = api.post("/api/customers", json=body)
    assert first.status_code == 201, first.text
    assert again.status_code == 409, again.text
    assert again.json()["detail"] == f"Key (email)=({body['email']}) already exists."


UNSTORABLE = [
    ("/api/products", '{"name": "x", "category": "c", "price": NaN}', "price", "nan is not"),
    ("/api/products", '{"name": "x", "category": "c", "price": 1e400}', "price", "inf is not"),
    ("/api/products", '{"name": "x", "category": "c", "price": -Infinity}', "price", "-inf"),
    ("/api/products", '{"name": "x", "category": "c", "price": "NaN"}', "price", "finite"),
    ("/api/products", '{"name": "a\\u0000b", "category": "c", "price": "1.00"}', "name", "NUL"),
    ("/api/products", '{"name": "a\\ud800b", "category": "c", "price": "1.00"}', "name",
     "lone surrogate"),
    ("/api/customers", '{"email": "n@u.l", "name": "n", "country": "NL", "city": "x", '
                       '"bio": "\\u0000"}', "bio", "NUL"),
    ("/api/order-items", '{"orderId": 1, "productId": 1, "quantity": 100000000000000000000, '
                         '"price": "1.00"}', "quantity", "out of range"),
    ("/api/orders", '{"customerId": 100000000000000000000, "total": "1.00"}', "customerId",
     "out of range"),
    ("/api/orders", '{"customerId": 1, "total": 1e308}', "total", "no more than 10 digits"),
    ("/api/customers", "[]", "body", "valid dictionary"),
]  # fmt: skip


@pytest.mark.parametrize(("path", "raw", "field", "says"), UNSTORABLE)
def test_a_body_postgresql_cannot_store_gets_422_with_the_reason(
    api: httpx.Client, path: str, raw: str, field: str, says: str
) -> None:
    """Tried as a new user would: JSON that parses but cannot be stored is refused, never a 500,
    and the answer names the field and the reason."""
    answer = api.post(path, headers=JSON, content=raw)
    assert answer.status_code == 422, answer.text
    assert field in answer.text and says in answer.text, answer.text


@pytest.mark.parametrize("path", ["/api/customers/100000000000000000000", "/api/orders/2147483648"])
def test_an_id_out_of_postgresqls_range_gets_422_not_500(api: httpx.Client, path: str) -> None:
    assert api.get(path).status_code == 422
