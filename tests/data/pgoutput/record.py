"""Record real pgoutput bytes from a throwaway PostgreSQL into recorded.json (run once).

    python tests/data/pgoutput/record.py

The decoder tests replay these bytes, so they need no server. Each case is a list of
messages (hex) exactly as `pg_logical_slot_get_binary_changes` returned them.
"""

from __future__ import annotations

import json
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any

from cdc_kit.config import Settings
from cdc_kit.services.postgres import PostgresService

HERE = Path(__file__).resolve().parent

TYPES_TABLE = """
CREATE TABLE typed (
    id bigint PRIMARY KEY, small int2, num numeric(10,2), txt text, vc varchar(20),
    flag boolean, ts timestamp, tstz timestamptz, d date, doc jsonb, u uuid, raw bytea,
    f float8, missing text
)"""
TYPED_ROW = (
    "INSERT INTO typed VALUES (1, 7, 12.50, 'héllo', 'v', true, '2026-01-02 03:04:05.123456', "
    "'2026-01-02 03:04:05+02', '2026-01-02', '{\"a\": [1, 2]}', "
    "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '\\xdeadbeef', 'NaN', NULL)"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def changes(cur: Any, slot: str, *options: str) -> list[str]:
    args = ", ".join(["%s"] * len(options))
    cur.execute(
        f"SELECT data FROM pg_logical_slot_get_binary_changes(%s, NULL, NULL, {args})",
        (slot, *options),
    )
    return [bytes(row[0]).hex() for row in cur.fetchall()]


def record(conn: Any) -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = []
    v1 = ("proto_version", "1", "publication_names", "pub")
    with conn.cursor() as cur:
        cur.execute(TYPES_TABLE)
        cur.execute("CREATE TABLE full_t (id int PRIMARY KEY, name text, bio text)")
        cur.execute("ALTER TABLE full_t REPLICA IDENTITY FULL")
        cur.execute("CREATE TABLE toast_t (id int PRIMARY KEY, n int, bio text)")
        cur.execute("CREATE PUBLICATION pub FOR ALL TABLES")
        cur.execute("SELECT pg_create_logical_replication_slot('s', 'pgoutput')")

        cur.execute(TYPED_ROW)
        cur.execute("UPDATE typed SET txt = 'world', missing = 'now set' WHERE id = 1")
        cur.execute("DELETE FROM typed WHERE id = 1")
        cases.append(
            {"name": "types_insert_update_delete", "proto": 1, "hex": changes(cur, "s", *v1)}
        )

        cur.execute("INSERT INTO full_t VALUES (1, 'Bo', 'short')")
        cur.execute("UPDATE full_t SET name = 'Bob' WHERE id = 1")
        cur.execute("DELETE FROM full_t WHERE id = 1")
        cases.append({"name": "replica_identity_full", "proto": 1, "hex": changes(cur, "s", *v1)})

        cur.execute("INSERT INTO typed (id, txt) VALUES (5, 'pk')")
        cur.execute("UPDATE typed SET id = 6 WHERE id = 5")
        cases.append({"name": "primary_key_change", "proto": 1, "hex": changes(cur, "s", *v1)})

        cur.execute("INSERT INTO toast_t VALUES (1, 0, repeat('lorem ipsum ', 17000))")
        cur.execute("UPDATE toast_t SET n = 1 WHERE id = 1")
        cases.append({"name": "unchanged_toast", "proto": 1, "hex": changes(cur, "s", *v1)})

        cur.execute("TRUNCATE full_t, toast_t RESTART IDENTITY")
        cases.append({"name": "truncate", "proto": 1, "hex": changes(cur, "s", *v1)})

        cur.execute("SELECT pg_logical_emit_message(true, 'cdc-kit', 'hello')")
        messages = changes(cur, "s", *v1, "messages", "true")
        cases.append({"name": "logical_message", "proto": 1, "hex": messages})

    # A streamed transaction: proto 2, tiny decoding memory, with a rolled-back savepoint.
    conn.autocommit = False
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO toast_t SELECT g, g, repeat('x', 200) FROM generate_series(10, 1009) g"
        )
        cur.execute("SAVEPOINT sp")
        cur.execute(
            "INSERT INTO toast_t SELECT g, g, repeat('y', 200) FROM generate_series(2000, 2999) g"
        )
        cur.execute("ROLLBACK TO SAVEPOINT sp")
        cur.execute("INSERT INTO toast_t VALUES (5000, 5000, 'after the savepoint')")
    conn.commit()
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SET logical_decoding_work_mem = '64kB'")
        streamed = changes(
            cur, "s", "proto_version", "2", "publication_names", "pub", "streaming", "on"
        )
    cases.append({"name": "streamed_with_subxact_abort", "proto": 2, "hex": streamed})
    return cases


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="cdc_kit_record_"))
    root.chmod(0o755)
    settings = Settings(home=root / "home", pg_port=free_port())
    for sub in ("run", "logs"):
        (root / "home" / sub).mkdir(parents=True)
    service = PostgresService(settings)
    service.ensure_started()
    try:
        import psycopg2

        conn = psycopg2.connect(str(settings.pg_dsn))
        conn.autocommit = True
        cases = record(conn)
        conn.close()
    finally:
        service.stop()
        shutil.rmtree(root, ignore_errors=True)
    (HERE / "recorded.json").write_text(json.dumps(cases, indent=1))
    for case in cases:
        print(f"{case['name']:<30} {len(case['hex'])} messages")


if __name__ == "__main__":
    main()
