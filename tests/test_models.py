"""The message contract, OLAP models and generated DDL, without running services."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated

import chdb.session
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from cdc_kit import olap, oltp
from cdc_kit.contract import EventParseError, parse_event
from cdc_kit.lsn import lsn_to_str, str_to_lsn


def make(table: str, operation: str, payload: dict, lsn: str = "0/10", **meta):
    body = {"metadata": {"table": table, "operation": operation, "lsn": lsn, **meta}}
    return parse_event(json.dumps({**body, "payload": payload}).encode())


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (None, "empty message"),
        (b"\xc3\x28", "not UTF-8"),
        (b'{"metadata":', "not JSON"),
        (b'"text"', "expected a JSON object"),
        (b'{"payload": {}}', "missing 'metadata'"),
        (b'{"metadata": {"table": "t", "operation": "insert"}, "payload": []}', "payload: "),
        (b'{"metadata": {"table": "", "operation": "insert"}}', "metadata.table"),
        (b'{"metadata": {"table": "t", "operation": "upsert"}}', "metadata.operation"),
        (b'{"metadata": {"table": "t", "operation": "insert", "lsn": "1/"}}', "not an LSN"),
    ],
)
def test_parse_event_names_what_is_wrong(raw: bytes | None, reason: str) -> None:
    with pytest.raises(EventParseError, match=reason):
        parse_event(raw)


def test_snapshot_rows_without_lsn_get_version_zero() -> None:
    event = parse_event(b'{"metadata": {"table": "customer", "operation": "read"}, "payload": {}}')
    assert event.lsn == 0


def test_lsn_round_trip() -> None:
    assert str_to_lsn("16/B374D848") == (0x16 << 32) | 0xB374D848
    assert lsn_to_str(str_to_lsn("16/B374D848")) == "16/B374D848"
    for bad in ("zz", "1/", "-1/0", "1/2/3", ""):
        with pytest.raises(ValueError, match="not an LSN"):
            str_to_lsn(bad)


KEY_ONLY = {"customer": {"id": 3}, "product": {"id": 3}, "order": {"id": 3}, "orderitem": {"id": 3}}


@pytest.mark.parametrize("table", list(KEY_ONLY))
def test_a_delete_validates_for_every_table(table: str) -> None:
    model = olap.OLAP_MODELS[table]
    row = olap.to_row(model, make(table, "delete", KEY_ONLY[table], lsn="0/20"))
    assert row["id"] == 3 and row["is_deleted"] == 1 and row["lsn"] == 0x20
    assert list(row) == olap.columns_of(model)


def test_the_seeds_approach_would_have_failed_on_a_delete() -> None:
    """The seed's OLAP model kept the source's min_length/gt rules: '' and 0 are rejected."""

    class SeedProductOlap(oltp.ProductBase, olap.CdcFields):
        id: int

    with pytest.raises(ValidationError):
        SeedProductOlap.model_validate({"id": 3, "name": "", "category": "", "price": 0})


def test_null_is_kept_on_update_and_missing_required_column_is_an_error() -> None:
    customer = {
        "id": 1, "email": "a@b.cd", "name": "A", "country": "NL", "city": "Ede",
        "bio": None, "createdAt": "2026-01-01T00:00:00+00:00",
    }  # fmt: skip
    row = olap.to_row(olap.CustomerOlap, make("customer", "update", customer))
    assert row["bio"] is None  # a real NULL, not ''
    with pytest.raises(olap.OlapValidationError, match="email"):
        olap.to_row(olap.CustomerOlap, make("customer", "update", {**customer, "email": None}))
    with pytest.raises(olap.OlapValidationError, match="primary key"):
        olap.to_row(olap.CustomerOlap, make("customer", "delete", {"email": "x"}))


@pytest.mark.parametrize(
    ("hint", "outside", "inside"),
    [("uint64", [-1, 2**64], [0, 2**64 - 1]), ("uint8", [-1, 256], [0, 255]),
     ("int8", [-129, 128], [-128, 127]), ("int32", [-(2**31) - 1, 2**31], [-(2**31), 2**31 - 1])],
)  # fmt: skip
def test_an_integer_outside_its_clickhouse_type_is_refused_by_validation(
    hint: str, outside: list[int], inside: list[int]
) -> None:
    """A value the column could never store (a negative id for UInt64) is a `validate` dead
    letter, not a rejected INSERT with clickhouse-connect's traceback in the router's log."""

    class Counts(olap.CdcOlapModelBase, olap.CdcFields):
        __table__ = "counts"
        id: Annotated[int, "uint64"]
        n: Annotated[int, hint]

    for value in inside:
        assert olap.to_row(Counts, make("counts", "insert", {"id": 1, "n": value}))["n"] == value
    for value in outside:
        with pytest.raises(olap.OlapValidationError, match="^n: Input should be"):
            olap.to_row(Counts, make("counts", "insert", {"id": 1, "n": value}))
    with pytest.raises(olap.OlapValidationError, match="^id: Input should be greater than"):
        olap.to_row(Counts, make("counts", "insert", {"id": -5, "n": 0}))


def test_timestamps_are_stored_as_utc() -> None:
    item = {"id": 1, "orderId": 2, "productId": 3, "quantity": 1, "price": "9.99",
            "createdAt": "2026-05-01T12:00:00+02:00"}  # fmt: skip
    row = olap.to_row(olap.OrderItemOlap, make("orderitem", "insert", item))
    assert row["createdAt"] == datetime(2026, 5, 1, 10, 0, tzinfo=UTC)
    assert row["createdAt"].utcoffset().total_seconds() == 0
    assert row["price"] == Decimal("9.99")


def test_defaults_follow_the_type() -> None:
    class Everything(BaseModel):
        a: str
        b: int | None
        c: Annotated[Decimal, "x"]
        d: datetime
        e: bool

    defaults = {name: olap.default_for(f.annotation) for name, f in Everything.model_fields.items()}
    assert defaults == {"a": "", "b": 0, "c": Decimal(0), "d": olap.EPOCH, "e": False}


def test_ddl_types_quoting_and_order_by() -> None:
    sql = olap.create_table_sql(olap.OrderOlap, database="local")
    assert "CREATE TABLE IF NOT EXISTS `local`.`order`" in sql  # `order` is a reserved word
    assert "`id` UInt64" in sql and "`customerId` UInt64" in sql
    assert "`status` LowCardinality(String)" in sql
    assert "`total` Decimal(10, 2)" in sql
    assert "ReplacingMergeTree(`lsn`, `is_deleted`)" in sql and sql.endswith("ORDER BY (`id`)")

    class Nullable(olap.CdcOlapModelBase, olap.CdcFields):
        __table__ = "weird`name"
        id: Annotated[int, "uint64"]
        tag: Annotated[str | None, "LowCardinality"] = None

    sql = olap.create_table_sql(Nullable)
    assert "`weird\\`name`" in sql
    assert "`tag` LowCardinality(Nullable(String))" in sql


def test_order_by_other_than_the_primary_key_is_refused() -> None:
    class ByCountry(olap.CustomerOlap):
        __order_by__ = ("country", "id")

    with pytest.raises(ValueError, match="delete marker does not replace"):
        olap.create_table_sql(ByCountry)


def test_generated_ddl_works_in_clickhouse(tmp_path) -> None:
    """The DDL of every model runs in real ClickHouse (chDB) and FINAL hides a delete marker."""
    session = chdb.session.Session(str(tmp_path / "ch"))
    try:
        session.query("CREATE DATABASE IF NOT EXISTS local")
        for model in olap.OLAP_MODELS.values():
            session.query(olap.create_table_sql(model))
        session.query(
            "INSERT INTO local.customer (id, email, name, country, city, bio, createdAt, "
            "is_deleted, lsn) VALUES (1, 'a@b.cd', 'A', 'NL', 'Ede', NULL, now64(), 0, 10)"
        )
        session.query(
            "INSERT INTO local.customer (id, email, name, country, city, bio, createdAt, "
            "is_deleted, lsn) VALUES (1, '', '', '', '', NULL, 0, 1, 20)"
        )
        count = session.query("SELECT count() FROM local.customer FINAL", "CSV").bytes()
        assert count.strip() == b"0"
        all_versions = session.query("SELECT count() FROM local.customer", "CSV").bytes()
        assert all_versions.strip() == b"2"
    finally:
        session.close()


def test_sample_data_is_deterministic() -> None:
    first = oltp.sample_rows(scale=3)
    second = oltp.sample_rows(scale=3)
    assert {t: len(rows) for t, rows in first.items()} == {
        t: len(rows) for t, rows in second.items()
    }
    assert [o.model_dump() for o in first["order"]] == [o.model_dump() for o in second["order"]]
    assert len(first["customer"]) == 60
    assert all(o.createdAt.tzinfo is UTC for o in first["orderitem"][:5])


def test_create_at_default_is_evaluated_per_row() -> None:
    """The seed's default=datetime.now() gave every row the import time."""
    a = oltp.Customer(email="a@b.cd", name="A", country="NL", city="X")
    b = oltp.Customer(email="c@d.ef", name="B", country="NL", city="Y")
    assert a.createdAt <= b.createdAt and a.createdAt.tzinfo is not None
    assert oltp.Customer.model_fields["createdAt"].default_factory is oltp.utcnow


# ---- properties (hypothesis): any bytes, any LSN ------------------------------------------
@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_either_parse_or_fail_with_a_reason(raw: bytes) -> None:
    try:
        parse_event(raw)
    except EventParseError as exc:
        assert str(exc) and "\n" not in str(exc)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=3),
    max_leaves=10,
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["table", "operation", "lsn", "end_lsn", "last_in_txn",
                                        "unchanged_toast", "x"]), json_values),
       json_values)  # fmt: skip
def test_any_json_envelope_either_parses_or_fails_with_a_reason(metadata, payload) -> None:
    raw = json.dumps({"metadata": metadata, "payload": payload}).encode()
    try:
        event = parse_event(raw)
    except EventParseError as exc:
        assert str(exc)
    else:
        assert event.operation in ("read", "insert", "update", "delete", "truncate")
        assert isinstance(event.payload, dict) and 0 <= event.lsn < 2**64


@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_every_lsn_survives_its_text_form(value: int) -> None:
    assert str_to_lsn(lsn_to_str(value)) == value


@settings(max_examples=300)
@given(st.text(max_size=20))
def test_only_hex_slash_hex_is_an_lsn(text: str) -> None:
    high, slash, low = text.partition("/")
    well_formed = bool(slash) and all(
        0 < len(part) <= 8 and all(c in "0123456789abcdefABCDEF" for c in part)
        for part in (high, low)
    )
    try:
        str_to_lsn(text)
        accepted = True
    except ValueError:
        accepted = False
    assert accepted == well_formed
