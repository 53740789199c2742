"""Record real pgoutput bytes from a throwaway PostgreSQL 18 into recorded.json.

    python tests/data/pgoutput/record.py

Starts a server in a fresh temp folder with the project's launcher (as root it runs as
`nobody`), runs each case's SQL, reads a fresh pgoutput slot once through
`pg_logical_slot_get_binary_changes` and writes, per case, `name`, `proto_version`, the pgoutput
`options`, and `messages` (hex, in order) with the matching `lsns` ('X/Y'). The server and its
folder are removed afterwards. tests/test_pgoutput.py replays the file without a server.
"""

from __future__ import annotations

import json
import shutil
import socket
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg2

from cdc_kit.config import Settings
from cdc_kit.services.postgres import PostgresService

HERE = Path(__file__).resolve().parent
OUTPUT = HERE / "recorded.json"

TYPES_TABLE = """
CREATE TABLE t_types (
    id int PRIMARY KEY,
    big bigint,
    num numeric(10, 2),
    txt text,
    vc varchar(20),
    flag bool,
    ts timestamp,
    tstz timestamptz,
    d date,
    doc jsonb,
    u uuid,
    raw bytea,
    f float8,
    missing text
)
"""
TYPES_SQL = """
INSERT INTO t_types VALUES (
    1, 9007199254740993, 12.5, 'héllo ''world''', 'short', true,
    '2024-02-29 13:45:01.123456', '2024-02-29 13:45:01.5+02', '2024-02-29',
    '{"a": [1, 2.5, null], "b": {"c": "d"}}', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
    '\\xdeadbeef00', 'NaN', NULL
);
UPDATE t_types SET num = 99.99, flag = false, f = -1.5 WHERE id = 1;
DELETE FROM t_types WHERE id = 1;
"""

IDENTITY_SETUP = """
CREATE TABLE t_ident_default (id int PRIMARY KEY, v text, n int);
CREATE TABLE t_ident_full (id int PRIMARY KEY, v text, n int);
ALTER TABLE t_ident_full REPLICA IDENTITY FULL;
INSERT INTO t_ident_default VALUES (1, 'one', 10), (2, 'two', 20);
INSERT INTO t_ident_full VALUES (1, 'one', 10), (2, 'two', 20);
"""
IDENTITY_SQL = """
DELETE FROM t_ident_default WHERE id = 1;
DELETE FROM t_ident_full WHERE id = 1;
UPDATE t_ident_full SET v = 'TWO', n = 21 WHERE id = 2;
"""

PK_SETUP = """
CREATE TABLE t_pk (id int PRIMARY KEY, v text);
INSERT INTO t_pk VALUES (1, 'keep');
"""
PK_SQL = "UPDATE t_pk SET id = 101 WHERE id = 1;"

TOAST_SETUP = """
CREATE TABLE t_toast (id int PRIMARY KEY, body text, n int);
ALTER TABLE t_toast ALTER COLUMN body SET STORAGE EXTERNAL;
"""
TOAST_SQL = """
INSERT INTO t_toast VALUES (1, repeat('x', 200000), 1);
UPDATE t_toast SET n = 2 WHERE id = 1;
"""

TRUNCATE_SETUP = """
CREATE TABLE t_trunc_a (id serial PRIMARY KEY, v text);
CREATE TABLE t_trunc_b (id serial PRIMARY KEY, v text);
INSERT INTO t_trunc_a (v) VALUES ('a');
INSERT INTO t_trunc_b (v) VALUES ('b');
"""
TRUNCATE_SQL = "TRUNCATE t_trunc_a, t_trunc_b RESTART IDENTITY;"

MESSAGE_SQL = """
BEGIN;
SELECT pg_logical_emit_message(true, 'prefix', 'content');
COMMIT;
"""

STREAM_SETUP = "CREATE TABLE t_stream (id int PRIMARY KEY, v text);"
STREAM_SQL = """
BEGIN;
INSERT INTO t_stream SELECT i, repeat('s', 100) || i FROM generate_series(1, 2000) i;
COMMIT;
"""
SAVEPOINT_SETUP = "CREATE TABLE t_sub (id int PRIMARY KEY, v text);"
SAVEPOINT_SQL = """
BEGIN;
INSERT INTO t_sub SELECT i, 'kept' FROM generate_series(1, 1000) i;
SAVEPOINT sp;
INSERT INTO t_sub SELECT i, 'rolled back' FROM generate_series(5001, 6000) i;
ROLLBACK TO SAVEPOINT sp;
INSERT INTO t_sub VALUES (9999, 'after');
COMMIT;
"""


@dataclass
class Case:
    """One recording: DDL and data before the slot exists, then the changes to capture."""

    name: str
    sql: str
    setup: str = ""
    proto_version: int = 1
    options: dict[str, str] = field(default_factory=dict)
    decoding: list[str] = field(default_factory=list)  # SET statements of the reading session


STREAM_DECODING = ["SET logical_decoding_work_mem = '64kB'"]
CASES = [
    Case("types", TYPES_SQL, TYPES_TABLE),
    Case("identity", IDENTITY_SQL, IDENTITY_SETUP),
    Case("pk_change", PK_SQL, PK_SETUP),
    Case("toast", TOAST_SQL, TOAST_SETUP),
    Case("truncate", TRUNCATE_SQL, TRUNCATE_SETUP),
    Case("message", MESSAGE_SQL, options={"messages": "true"}),
    Case(
        "streamed",
        STREAM_SQL,
        STREAM_SETUP,
        proto_version=2,
        options={"streaming": "on"},
        decoding=STREAM_DECODING,
    ),
    Case(
        "streamed_savepoint",
        SAVEPOINT_SQL,
        SAVEPOINT_SETUP,
        proto_version=2,
        options={"streaming": "on"},
        decoding=["SET debug_logical_replication_streaming = 'immediate'"],
    ),
]


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def record_case(work: Any, reader: Any, case: Case) -> dict[str, Any]:
    """Run one case against its own slot and return its JSON record."""
    with work.cursor() as cur:
        if case.setup:
            cur.execute(case.setup)
        cur.execute("SELECT pg_create_logical_replication_slot('s', 'pgoutput')")
        cur.execute(case.sql)
    options = {
        "proto_version": str(case.proto_version),
        "publication_names": "pub",
        **case.options,
    }
    args = ", ".join(["%s"] * (2 * len(options)))
    params = [item for pair in options.items() for item in pair]
    with reader.cursor() as cur:
        cur.execute("RESET ALL")
        for statement in case.decoding:
            cur.execute(statement)
        cur.execute(
            f"SELECT lsn::text, data FROM pg_logical_slot_get_binary_changes("
            f"'s', NULL, NULL, {args})",
            params,
        )
        rows = cur.fetchall()
        cur.execute("RESET ALL")
        cur.execute("SELECT pg_drop_replication_slot('s')")
    return {
        "name": case.name,
        "proto_version": case.proto_version,
        "options": case.options,
        "messages": [bytes(data).hex() for _, data in rows],
        "lsns": [lsn for lsn, _ in rows],
    }


def main() -> None:
    """Start PostgreSQL, record every case, stop it and remove its folder."""
    root = Path(tempfile.mkdtemp(prefix="cdc_kit_pgoutput_"))
    root.chmod(0o755)
    home = root / "home"
    for folder in (home, home / "run", home / "logs"):
        folder.mkdir()
    settings = Settings(home=home, pg_port=free_port())
    service = PostgresService(settings)
    try:
        service.ensure_started()
        connect = {"host": "127.0.0.1", "port": settings.pg_port, "user": "postgres"}
        work = psycopg2.connect(dbname="postgres", **connect)
        reader = psycopg2.connect(dbname="postgres", **connect)
        work.autocommit = reader.autocommit = True
        with work.cursor() as cur:
            cur.execute("SET TimeZone = 'UTC'")
            cur.execute("CREATE PUBLICATION pub FOR ALL TABLES")
        recorded = [record_case(work, reader, case) for case in CASES]
        work.close()
        reader.close()
    finally:
        service.stop()
        shutil.rmtree(root, ignore_errors=True)
    OUTPUT.write_text(json.dumps(recorded, indent=1) + "\n")
    for case in recorded:
        print(f"{case['name']:<20} proto {case['proto_version']}: {len(case['messages'])} msgs")


if __name__ == "__main__":
    main()
