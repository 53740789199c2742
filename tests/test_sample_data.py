"""The sample data ends up complete from any state a learner can leave, never half loaded."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from cdc_kit import oltp
from cdc_kit.stack import Stack

SAMPLE = {name: len(rows) for name, rows in oltp.sample_rows().items()}


@pytest.fixture()
def engine(stack: Stack) -> Iterator[Any]:
    """The lesson tables in a PostgreSQL database of this test's own on the shared server."""
    name = f"sample_{uuid.uuid4().hex[:8]}"
    server = stack.pg_engine().execution_options(isolation_level="AUTOCOMMIT")
    with server.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine = create_engine(stack.pg_engine().url.set(database=name))
    oltp.create_all(engine)
    yield engine
    engine.dispose()
    with server.connect() as conn:
        conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))


def run(engine: Any, sql: str) -> list[tuple]:
    with engine.begin() as conn:
        result = conn.execute(text(sql))
        return [tuple(row) for row in result] if result.returns_rows else []


def orphans(engine: Any) -> int:
    """Rows whose parent row is missing (what a half load leaves behind)."""
    return run(
        engine,
        'SELECT (SELECT count(*) FROM "order" o WHERE NOT EXISTS '
        '(SELECT 1 FROM customer c WHERE c.id = o."customerId")) + '
        '(SELECT count(*) FROM orderitem i WHERE NOT EXISTS '
        '(SELECT 1 FROM product p WHERE p.id = i."productId"))',
    )[0][0]


def test_a_fresh_database_gets_every_sample_row_once(engine: Any) -> None:
    assert oltp.load_sample_data(engine, progress=False) == SAMPLE
    assert oltp.load_sample_data(engine, progress=False) == dict.fromkeys(SAMPLE, 0)


def test_after_the_seeds_api_walkthrough_the_sample_data_loads_whole(engine: Any) -> None:
    # The README's walkthrough on a fresh lab: a customer, a product, an order (ids from the
    # sequences: 1 each). The old loader skipped every table that had rows, then inserted
    # sample items pointing at sample products that were never loaded.
    run(engine, "INSERT INTO customer (email, name, country, city) "
                "VALUES ('jane@example.com', 'Jane Doe', 'USA', 'San Francisco')")  # fmt: skip
    run(engine, "INSERT INTO product (name, category, price) "
                "VALUES ('Wireless Mouse', 'Electronics', 29.99)")  # fmt: skip
    run(engine, 'INSERT INTO "order" ("customerId", total) VALUES (1, 29.99)')
    loaded = oltp.load_sample_data(engine, progress=False)
    assert loaded == {name: count - (name != "orderitem") for name, count in SAMPLE.items()}
    assert orphans(engine) == 0
    # Ids after the sample ones are free: the next insert takes its id from the sequence.
    run(engine, "INSERT INTO product (name, category, price) VALUES ('Mug', 'tableware', 9)")
    assert run(engine, "SELECT max(id) FROM product")[0][0] == SAMPLE["product"] + 1


@pytest.mark.parametrize(
    "mess",
    [
        "DELETE FROM product WHERE id IN (1, 3)",  # cascades to their order items
        'DELETE FROM customer WHERE id = 3',  # cascades to orders and their items
        "TRUNCATE orderitem",
        'TRUNCATE customer, product CASCADE',  # every table
    ],
    ids=["products deleted", "a customer deleted", "items truncated", "all truncated"],
)
def test_rows_deleted_or_truncated_by_hand_come_back(engine: Any, mess: str) -> None:
    oltp.load_sample_data(engine, progress=False)
    run(engine, mess)
    oltp.load_sample_data(engine, progress=False)
    counts = {name: run(engine, f'SELECT count(*) FROM "{name}"')[0][0] for name in SAMPLE}
    assert counts == SAMPLE
    assert orphans(engine) == 0


def test_an_older_lab_gets_the_unique_email_unless_it_already_repeats_one(engine: Any) -> None:
    """Tables of an older kit had no unique e-mail; `up` (and create_all) add the index, but
    never delete a learner's rows: with repeats, they say which e-mails repeat instead."""
    run(engine, "DROP INDEX ix_customer_email")  # as an older kit made the table
    twice = "INSERT INTO customer (email, name, country, city) VALUES ('jane@example.com', " \
            "'Jane Doe', 'USA', 'San Francisco')"  # fmt: skip
    run(engine, twice)
    run(engine, twice)  # the seed's walkthrough, run twice
    with engine.begin() as conn:
        assert oltp.make_email_unique(conn) == ["jane@example.com"]
    assert "jane@example.com" in oltp.email_warning(["jane@example.com"])
    run(engine, "DELETE FROM customer WHERE id = (SELECT max(id) FROM customer)")
    with engine.begin() as conn:
        assert oltp.make_email_unique(conn) == []
    with pytest.raises(Exception, match="ix_customer_email"):
        run(engine, twice)
