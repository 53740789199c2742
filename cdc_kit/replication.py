"""Logical replication set-up and inspection: publication, slot, REPLICA IDENTITY, lag, peeks.

Three things must exist before PostgreSQL hands out changes:
1. `wal_level = logical` (the embedded server is started that way);
2. a *publication*: which tables' changes are published (here: every table in `public`);
3. a *replication slot*: PostgreSQL's bookmark of how far a consumer has confirmed. The slot is
   the durable log of this kit: WAL is kept until the slot's consumer confirms it, which is
   also why an idle, forgotten slot is dangerous (see `slot_health`).

All functions take a plain psycopg2 connection; identifiers are quoted with psycopg2.sql.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from psycopg2 import sql

from cdc_kit.errors import FixableError
from cdc_kit.lsn import lsn_to_str, str_to_lsn

ReplicaIdentity = Literal["DEFAULT", "FULL"]


def _execute(conn: Any, query: sql.Composable | str, params: tuple = ()) -> list[tuple]:
    with conn.cursor() as cur:
        cur.execute(query, params)
        return cur.fetchall() if cur.description else []


def current_wal_lsn(conn: Any) -> int:
    """PostgreSQL's WAL position now: every change committed so far is before it."""
    return int(_execute(conn, "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")[0][0])


def confirmed_lsn(conn: Any, slot: str) -> int | None:
    """How far the slot's consumer has confirmed (None: there is no such slot)."""
    rows = _execute(
        conn,
        "SELECT confirmed_flush_lsn - '0/0'::pg_lsn FROM pg_replication_slots WHERE slot_name = %s",
        (slot,),
    )
    return int(rows[0][0]) if rows and rows[0][0] is not None else None


def slot_active(conn: Any, slot: str) -> bool | None:
    """Whether a consumer is streaming from `slot` now (None: there is no such slot)."""
    rows = _execute(conn, "SELECT active FROM pg_replication_slots WHERE slot_name = %s", (slot,))
    return bool(rows[0][0]) if rows else None


def primary_key_columns(conn: Any, schema: str, table: str) -> list[str]:
    """The primary-key columns of a table, in key order (capture's message keys).

    Not the replica-identity columns a Relation message flags: under FULL those are all.
    """
    rows = _execute(
        conn,
        "SELECT a.attname FROM pg_index i JOIN pg_attribute a "
        "ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
        "WHERE i.indrelid = format('%%I.%%I', %s, %s)::regclass AND i.indisprimary "
        "ORDER BY array_position(i.indkey, a.attnum)",
        (schema, table),
    )
    return [row[0] for row in rows]


def check_wal_level(conn: Any) -> None:
    """Raise a clear error unless the server can do logical decoding."""
    level = _execute(conn, "SHOW wal_level")[0][0]
    if level != "logical":
        raise FixableError(
            f"wal_level is '{level}', logical replication needs 'logical': set wal_level=logical "
            "in postgresql.conf and restart PostgreSQL (the embedded stack does this for you)"
        )


#: Set by the kit on the servers it starts (`-c cdc_kit.lab_server=on`: the embedded server,
#: docker-compose.yaml's); lessons change server-wide settings only where it is set.
LAB_SERVER_SETTING = "cdc_kit.lab_server"


@dataclass(frozen=True)
class ServerFacts:
    """What a lesson must know before it does something version- or privilege-dependent."""

    version_num: int  # server_version_num: 150018 is 15.18, 180006 is 18.6
    superuser: bool
    lab_server: bool  # started by the kit, so a lesson may change its settings

    @property
    def major(self) -> int:
        return self.version_num // 10000

    def may_change_settings(self) -> str | None:
        """None if a lesson may change server-wide settings here, else why not (one line)."""
        if not self.lab_server:
            return (
                "this PostgreSQL was not started by the kit (no cdc_kit.lab_server setting): "
                "a lesson never changes server-wide settings on a server others may use"
            )
        if not self.superuser:
            return "the lab's PostgreSQL user is not a superuser, which this step needs"
        return None


def server_facts(conn: Any) -> ServerFacts:
    """The server's version, whether we are a superuser, and whether the kit started it."""
    version, superuser, lab = _execute(
        conn,
        "SELECT current_setting('server_version_num')::int, "
        "(SELECT rolsuper FROM pg_roles WHERE rolname = current_user), "
        "coalesce(current_setting(%s, true), '') = 'on'",
        (LAB_SERVER_SETTING,),
    )[0]
    return ServerFacts(int(version), bool(superuser), bool(lab))


def log_running_transactions(conn: Any) -> str:
    """Write a running-transactions record into the WAL now; returns the statement used.

    A logical slot's `restart_lsn` moves only at such records, which PostgreSQL writes every
    15 s or so by itself. `pg_log_standby_snapshot()` writes one (PostgreSQL 16 and later);
    on 15, a `CHECKPOINT` writes one too. Both need a superuser (or `pg_checkpoint`, 15+).
    """
    statement = (
        "SELECT pg_log_standby_snapshot()" if server_facts(conn).major >= 16 else "CHECKPOINT"
    )
    _execute(conn, statement)
    return statement


def ensure_publication(conn: Any, name: str, schema: str = "public") -> bool:
    """Publish every table of `schema` (today's and tomorrow's). True if created now."""
    if _execute(conn, "SELECT 1 FROM pg_publication WHERE pubname = %s", (name,)):
        return False
    _execute(
        conn,
        sql.SQL("CREATE PUBLICATION {} FOR TABLES IN SCHEMA {}").format(
            sql.Identifier(name), sql.Identifier(schema)
        ),
    )
    return True


def drop_publication(conn: Any, name: str) -> None:
    _execute(conn, sql.SQL("DROP PUBLICATION IF EXISTS {}").format(sql.Identifier(name)))


def published_tables(conn: Any, publication: str) -> list[tuple[str, str]]:
    """(schema, table) pairs a publication covers, in a stable order."""
    rows = _execute(
        conn,
        "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = %s "
        "ORDER BY schemaname, tablename",
        (publication,),
    )
    return [(schema, table) for schema, table in rows]


def ensure_slot(conn: Any, name: str, plugin: str = "pgoutput") -> bool:
    """Create a logical slot (through SQL, so without an exported snapshot). True if created."""
    if _execute(conn, "SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (name,)):
        return False
    _execute(conn, "SELECT pg_create_logical_replication_slot(%s, %s)", (name, plugin))
    return True


def drop_slot(conn: Any, name: str) -> bool:
    """Drop a slot if it exists and is not in use. True if dropped."""
    rows = _execute(conn, "SELECT active FROM pg_replication_slots WHERE slot_name = %s", (name,))
    if not rows:
        return False
    if rows[0][0]:
        raise FixableError(
            f"replication slot '{name}' is in use by a running consumer; stop it first"
        )
    _execute(conn, "SELECT pg_drop_replication_slot(%s)", (name,))
    return True


def set_replica_identity(
    conn: Any, table: str, identity: ReplicaIdentity, schema: str = "public"
) -> None:
    """DEFAULT: deletes carry only the primary key; FULL: deletes/updates carry the old row."""
    if identity not in ("DEFAULT", "FULL"):
        raise ValueError(f"replica identity must be DEFAULT or FULL, not {identity!r}")
    _execute(
        conn,
        sql.SQL("ALTER TABLE {}.{} REPLICA IDENTITY " + identity).format(
            sql.Identifier(schema), sql.Identifier(table)
        ),
    )


def replica_identity(conn: Any, table: str, schema: str = "public") -> str:
    """The table's current REPLICA IDENTITY as a word (DEFAULT, FULL, NOTHING, INDEX)."""
    code = _execute(
        conn,
        "SELECT c.relreplident FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s",
        (schema, table),
    )
    if not code:
        raise FixableError(f"table {schema}.{table} does not exist")
    return {"d": "DEFAULT", "f": "FULL", "n": "NOTHING", "i": "INDEX"}[code[0][0]]


def tables_without_primary_key(conn: Any, publication: str) -> list[str]:
    """Published tables lacking a primary key: their UPDATE/DELETE would fail at the source."""
    rows = _execute(
        conn,
        "SELECT t.schemaname || '.' || t.tablename FROM pg_publication_tables t "
        "WHERE t.pubname = %s AND NOT EXISTS (SELECT 1 FROM pg_index i "
        "WHERE i.indrelid = format('%%I.%%I', t.schemaname, t.tablename)::regclass "
        "AND i.indisprimary) ORDER BY 1",
        (publication,),
    )
    return [row[0] for row in rows]


@dataclass(frozen=True)
class SlotHealth:
    """One slot's two numbers a DBA watches, and whether PostgreSQL may soon invalidate it.

    - lag: WAL written since the consumer's confirmed position (`confirmed_flush_lsn`);
    - retained: WAL the server must keep for this slot (since `restart_lsn`), which cannot be
      recycled: a slot nobody reads makes this grow until the disk, or
      `max_slot_wal_keep_size`, runs out.
    """

    slot_name: str
    plugin: str
    active: bool
    confirmed_flush_lsn: str | None
    lag_bytes: int | None
    wal_status: str | None
    safe_wal_size: int | None
    restart_lsn: str | None = None
    retained_bytes: int | None = None


def slot_health(conn: Any) -> list[SlotHealth]:
    """Every logical slot with its lag, its retained WAL and its WAL safety."""
    rows = _execute(
        conn,
        "SELECT slot_name, plugin, active, confirmed_flush_lsn::text, "
        "pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint, "
        "wal_status, safe_wal_size, restart_lsn::text, "
        "pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint "
        "FROM pg_replication_slots WHERE slot_type = 'logical' ORDER BY slot_name",
    )
    return [SlotHealth(*row) for row in rows]


def wal_on_disk(conn: Any) -> tuple[int, int]:
    """(files, bytes) in the server's pg_wal folder: the disk the slots' retained WAL lives on."""
    files, size = _execute(conn, "SELECT count(*), coalesce(sum(size), 0) FROM pg_ls_waldir()")[0]
    return int(files), int(size)


def peek_text_changes(conn: Any, slot: str, limit: int | None = None) -> list[tuple[str, int, str]]:
    """(lsn, xid, text) of pending changes, decoded by test_decoding, WITHOUT consuming them.

    The slot must use the `test_decoding` plugin (create one with
    `ensure_slot(conn, name, plugin="test_decoding")`): peeking shows what a slot holds.
    """
    return [
        (str(lsn), int(xid), str(data))
        for lsn, xid, data in _execute(
            conn,
            "SELECT lsn::text, xid::text::bigint, data "
            "FROM pg_logical_slot_peek_changes(%s, NULL, %s)",
            (slot, limit),
        )
    ]


def peek_binary_changes(
    conn: Any, slot: str, publication: str, limit: int | None = None, proto_version: int = 1
) -> list[tuple[str, bytes]]:
    """(lsn, raw pgoutput bytes) of pending changes of a pgoutput slot, without consuming them.

    Feed the bytes to `cdc_kit.pgoutput.Decoder` to see the messages capture receives.
    """
    rows = _execute(
        conn,
        "SELECT lsn::text, data FROM pg_logical_slot_peek_binary_changes(%s, NULL, %s, "
        "'proto_version', %s, 'publication_names', %s)",
        (slot, limit, str(proto_version), publication),
    )
    return [(str(lsn), bytes(data)) for lsn, data in rows]


def peek_decoded_changes(
    conn: Any, slot: str, publication: str, limit: int | None = None
) -> list[tuple[str, Any]]:
    """(lsn, decoded pgoutput message) of pending changes, without consuming them."""
    from cdc_kit.pgoutput import Decoder  # the decoder loads only where peeks need it

    decoder = Decoder()
    return [
        (lsn, decoder.feed(data))
        for lsn, data in peek_binary_changes(conn, slot, publication, limit)
    ]


def describe_message(decoder: Any, message: Any) -> str:
    """One readable line for a decoded pgoutput message (rows as column -> value)."""
    from cdc_kit.pgoutput import Begin, Commit, Delete, Insert, Relation, Update

    def table(relid: int) -> str:
        relation = decoder.relation(relid)
        return f"{relation.namespace}.{relation.name}"

    if isinstance(message, Begin):
        return f"Begin xid={message.xid}"
    if isinstance(message, Commit):
        return f"Commit end_lsn={lsn_to_str(message.end_lsn)}"
    if isinstance(message, Relation):
        columns = ", ".join(c.name + ("*" if c.is_key else "") for c in message.columns)
        return f"Relation {message.namespace}.{message.name} ({columns}; * = identity)"
    if isinstance(message, Insert):
        return f"Insert {table(message.relid)} new={decoder.row(message.relid, message.new)}"
    if isinstance(message, Update):
        new = decoder.row(message.relid, message.new)
        if message.old is None:
            return f"Update {table(message.relid)} new={new}"
        old = decoder.row(message.relid, message.old)
        return f"Update {table(message.relid)} new={new} old({message.old_kind})={old}"
    if isinstance(message, Delete):
        old = decoder.row(message.relid, message.old)
        return f"Delete {table(message.relid)} old({message.old_kind})={old}"
    return repr(message)


def peek_side_by_side(
    conn: Any, text_slot: str, pgoutput_slot: str, publication: str
) -> list[dict[str, str]]:
    """The pending changes of a test_decoding slot and a pgoutput slot, lined up by LSN.

    Neither slot is consumed. Rows: `lsn`, `test_decoding` (the plugin's text), `pgoutput` (the
    decoded message). pgoutput's Relation messages (a table's layout) have no text twin.
    """
    from cdc_kit.pgoutput import Decoder, Relation

    decoder = Decoder()
    by_lsn: dict[str, dict[str, list]] = {}
    for lsn, _, data in peek_text_changes(conn, text_slot):
        by_lsn.setdefault(lsn, {"text": [], "binary": []})["text"].append(data)
    for lsn, raw in peek_binary_changes(conn, pgoutput_slot, publication):
        message = decoder.feed(raw)
        line = describe_message(decoder, message)
        kind = "layout" if isinstance(message, Relation) else type(message).__name__
        by_lsn.setdefault(lsn, {"text": [], "binary": []})["binary"].append((kind, line))
    rows = []
    for lsn in sorted(by_lsn, key=str_to_lsn):
        texts = list(by_lsn[lsn]["text"])
        for kind, line in by_lsn[lsn]["binary"]:
            text = "" if kind == "layout" or not texts else texts.pop(0)
            rows.append({"lsn": lsn, "test_decoding": text, "pgoutput": line})
        rows += [{"lsn": lsn, "test_decoding": text, "pgoutput": ""} for text in texts]
    return rows
