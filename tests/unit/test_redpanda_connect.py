"""redpanda-connect.yaml produces the kit's message contract: validated here, not executed.

Redpanda Connect (and its enterprise postgres_cdc input) cannot be installed where the kit is
tested, so these tests read the file: the input, every name against cdc_kit.config, and each
contract field against the postgres_cdc metadata it comes from, as Redpanda Connect's
documentation names them.
"""

from __future__ import annotations

import importlib
import json
import re
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml

from cdc_kit import oltp
from cdc_kit.config import Settings
from cdc_kit.contract import OPERATIONS, parse_event
from tests.conftest import REPO, default_settings

CONNECT = REPO / "redpanda-connect.yaml"
#: postgres_cdc's metadata, as its documentation lists them ("Metadata": table, operation
#: read|insert|update|delete, lsn, schema = the column types, commit_ts_ms, before).
POSTGRES_CDC_METADATA = {"table", "operation", "lsn", "schema", "commit_ts_ms", "before"}
POSTGRES_CDC_OPERATIONS = {"read", "insert", "update", "delete"}
#: `${NAME}` or `${NAME:default}` (Redpanda Connect's form), but not `${! interpolation }`.
VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z0-9_]+)(?::(?P<default>[^}]*))?\}")
ASSIGNMENT = re.compile(r"^\s*root\.(?P<path>[\w.]+)\s*=\s*(?P<expr>.+)$", re.M)


@pytest.fixture(scope="module")
def connect() -> dict[str, Any]:
    return yaml.safe_load(CONNECT.read_text())


@pytest.fixture(scope="module")
def mapping(connect: dict[str, Any]) -> str:
    (processor,) = connect["pipeline"]["processors"]
    return processor["mapping"]


def router_dead_letter_keys() -> list[str]:
    """The keys of a dead letter the kit's router writes to the dead-letter topic."""
    for name in ("cdc_kit.dead_letters", "cdc_kit.router.dead_letters"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        letter = module.DeadLetter("decode", "why", "t", 0, 1, b"k", b"v", datetime.now(UTC))
        return list(json.loads(letter.to_message()))
    raise AssertionError("no cdc_kit module with DeadLetter")


def resolved(value: str) -> str:
    """What Redpanda Connect reads when the variable is unset (its default)."""
    return VARIABLE.sub(lambda m: m["default"] or "", value)


def assignments(mapping: str) -> dict[str, str]:
    found = {m["path"]: m["expr"].strip() for m in ASSIGNMENT.finditer(mapping)}
    return {path: expr for path, expr in found.items() if not expr.startswith("throw(")}


def test_input_is_postgres_cdc_on_the_kits_tables(connect: dict[str, Any]) -> None:
    source = connect["input"]["postgres_cdc"]
    assert source["tables"] == list(oltp.TABLES) == ["customer", "product", "order", "orderitem"]
    assert source["schema"] == "public"
    assert source["stream_snapshot"] is True  # existing rows first, like the kit's capture
    assert source["include_transaction_markers"] is False  # no BEGIN/COMMIT messages


def test_connect_has_its_own_slot(connect: dict[str, Any]) -> None:
    slot = connect["input"]["postgres_cdc"]["slot_name"]
    assert VARIABLE.fullmatch(slot)["name"] == "CDC_KIT_CONNECT_SLOT_NAME"
    assert resolved(slot) != default_settings().slot_name, "Connect must never share the kit's slot"
    assert "publication" not in connect["input"]["postgres_cdc"]  # it makes its own


def test_every_variable_is_a_kit_setting_with_the_docker_default(connect: dict[str, Any]) -> None:
    text = CONNECT.read_text()
    docker = default_settings(mode="docker")
    seen = set()
    for match in VARIABLE.finditer(text):
        name, default = match["name"], match["default"]
        seen.add(name)
        if name == "CDC_KIT_CONNECT_SLOT_NAME":
            continue
        field = name.removeprefix("CDC_KIT_").lower()
        assert name.startswith("CDC_KIT_") and field in Settings.model_fields, name
        assert default == str(getattr(docker, field) or ""), f"{name} defaults to {default!r}"
    assert {"CDC_KIT_CDC_TOPIC", "CDC_KIT_DLQ_TOPIC", "CDC_KIT_KAFKA_BOOTSTRAP"} <= seen
    dsn = resolved(connect["input"]["postgres_cdc"]["dsn"])
    assert dsn.startswith(docker.pg_dsn.replace("postgresql://postgres@", "postgres://postgres:@"))


def test_mapping_emits_exactly_the_contract(mapping: str) -> None:
    fields = assignments(mapping)
    assert set(fields) == {
        "metadata.table",
        "metadata.operation",
        "metadata.lsn",
        "metadata.schema",
        "metadata.commit_ts_ms",
        "payload",
    }
    assert fields["payload"] == "this"  # the row postgres_cdc gives as the body


@pytest.mark.parametrize(
    ("field", "source"),
    [("metadata.table", "table"), ("metadata.operation", "operation"), ("metadata.lsn", "lsn")],
)
def test_each_contract_field_comes_from_its_postgres_cdc_metadata(
    mapping: str, field: str, source: str
) -> None:
    assert source in POSTGRES_CDC_METADATA
    expr = assignments(mapping)[field]
    variable = re.fullmatch(r"\$(\w+)", expr)
    if variable:  # `let table = metadata("table")...`
        expr = re.search(rf"^\s*let {variable[1]}\s*=\s*(.+)$", mapping, re.M)[1]
    assert re.match(rf'metadata\("{source}"\)', expr), f"{field} is made from {expr}"


def test_snapshot_rows_get_the_kits_snapshot_lsn(mapping: str) -> None:
    # postgres_cdc sets no lsn on snapshot reads; the contract says snapshot rows carry "0/0".
    assert assignments(mapping)["metadata.lsn"] == 'metadata("lsn").or("0/0")'


def test_mapping_reads_only_documented_metadata(mapping: str) -> None:
    read = set(re.findall(r'metadata\("(\w+)"\)', mapping))
    assert read <= POSTGRES_CDC_METADATA, read - POSTGRES_CDC_METADATA
    # postgres_cdc's `schema` is the column types (an object); the contract's is a name.
    assert 'metadata("schema")' not in mapping
    assert assignments(mapping)["metadata.schema"] == '"public"'


def test_accepted_operations_are_the_contracts(mapping: str) -> None:
    listed = re.search(r"!\[(?P<ops>[^\]]+)\]\.contains\(\$operation\)", mapping)["ops"]
    accepted = {op.strip().strip('"') for op in listed.split(",")}
    assert accepted == POSTGRES_CDC_OPERATIONS
    assert accepted <= set(OPERATIONS)


@pytest.mark.parametrize("operation", sorted(POSTGRES_CDC_OPERATIONS))
def test_a_message_shaped_by_the_mapping_parses_as_a_kit_event(
    mapping: str, operation: str
) -> None:
    """The literal values the mapping adds (schema, a missing lsn's "0/0", commit_ts_ms as an
    extra field) must be what the router's parser accepts."""
    row = {"id": 7, "email": "jane@example.com", "name": "Jane"}
    metadata = {
        "table": "customer",
        "operation": operation,
        "lsn": "0/0" if operation == "read" else "0/16B3748",
        "schema": "public",
    }
    if operation != "read":
        metadata["commit_ts_ms"] = "1767225600000"
    event = parse_event(json.dumps({"metadata": metadata, "payload": row}).encode())
    assert (event.table, event.operation, event.payload) == (
        "customer",
        operation,
        row,
    )


def test_messages_are_keyed_table_and_id(connect: dict[str, Any], mapping: str) -> None:
    assert re.search(r'^\s*meta kafka_key = "%s:%v"\.format\(\$table, this\.id\)$', mapping, re.M)
    main = connect["output"]["switch"]["cases"][-1]["output"]["kafka_franz"]
    assert main["key"] == '${! metadata("kafka_key") }'
    assert main["max_in_flight"] == 1  # one request at a time keeps the commit order


def test_outputs_go_to_the_kits_topics(connect: dict[str, Any]) -> None:
    settings = default_settings(mode="docker")
    dead, main = connect["output"]["switch"]["cases"]
    assert dead["check"] == "errored()"
    assert resolved(dead["output"]["kafka_franz"]["topic"]) == settings.dlq_topic
    assert "check" not in main
    assert resolved(main["output"]["kafka_franz"]["topic"]) == settings.cdc_topic
    for case in (dead, main):
        (brokers,) = case["output"]["kafka_franz"]["seed_brokers"]
        assert resolved(brokers) == settings.kafka_bootstrap


def test_dead_letters_are_shaped_like_the_routers(connect: dict[str, Any]) -> None:
    dead = connect["output"]["switch"]["cases"][0]["output"]
    (processor,) = dead["processors"]
    fields = set(re.findall(r"^\s*root\.(\w+)\s*=", processor["mapping"], re.M))
    assert fields == set(router_dead_letter_keys())
    assert "root.error = error()" in processor["mapping"]
    assert 'root.original = {"text": content().string()}' in processor["mapping"]


def test_mapping_refuses_what_it_cannot_map(mapping: str) -> None:
    throws = re.findall(r"root = throw\(", mapping)
    assert len(throws) >= 4  # no table, unknown operation, body not an object, no id
