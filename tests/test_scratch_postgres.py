"""A lesson's scratch PostgreSQL starts at PostgreSQL's defaults, takes a restart, and leaves
nothing behind: no server, no folder, whatever happened in between."""

from __future__ import annotations

import psutil
import psycopg2
import pytest

from cdc_kit.config import Settings
from cdc_kit.scratch_postgres import ScratchPostgres, unavailable
from tests.conftest import default_settings


def value(conn: object, sql: str) -> object:
    with conn.cursor() as cur:  # type: ignore[attr-defined]
        cur.execute(sql)
        return cur.fetchone()[0] if cur.description else None


def postgres_on(port: int) -> list[int]:
    """Pids of processes listening on a loopback port."""
    return [
        c.pid for c in psutil.net_connections(kind="tcp")
        if c.laddr and c.laddr.port == port and c.status == psutil.CONN_LISTEN
    ]  # fmt: skip


def test_refuses_a_logical_slot_until_wal_level_is_logical_and_the_server_restarted() -> None:
    with ScratchPostgres() as scratch:
        conn = scratch.connect()
        assert value(conn, "SHOW wal_level") == "replica"
        assert value(conn, "SHOW max_slot_wal_keep_size") == "-1"
        assert value(conn, "SELECT current_setting('cdc_kit.lab_server', true)") is None
        with pytest.raises(psycopg2.Error, match="wal_level"):
            value(conn, "SELECT pg_create_logical_replication_slot('s', 'pgoutput')")
        value(conn, "ALTER SYSTEM SET wal_level = logical")
        assert value(conn, "SHOW wal_level") == "replica", "takes effect only after a restart"
        conn.close()

        scratch.restart()
        conn = scratch.connect()
        assert value(conn, "SHOW wal_level") == "logical"
        value(conn, "SELECT pg_create_logical_replication_slot('s', 'pgoutput')")
        conn.close()
        root, port = scratch.root, scratch.port
        assert postgres_on(port)
    assert not root.exists()
    assert not postgres_on(port)


def test_remove_stops_the_server_even_when_the_work_failed() -> None:
    scratch = ScratchPostgres()
    try:
        scratch.start()
        raise KeyboardInterrupt  # what an interrupted Run All raises inside the try
    except KeyboardInterrupt:
        pass
    finally:
        scratch.remove()
    assert not scratch.root.exists()
    assert not postgres_on(scratch.port)


def test_unavailable_in_docker_mode_with_a_reason() -> None:
    reason = unavailable(default_settings(mode="docker"))
    assert reason and "docker" in reason
    assert unavailable(Settings(mode="embedded")) is None  # the binaries are installed here
