"""What lessons ask the server before a version- or privilege-dependent step."""

from __future__ import annotations

from cdc_kit import replication
from cdc_kit.stack import Stack


def test_the_embedded_server_says_the_kit_started_it(stack: Stack) -> None:
    conn = stack.pg_connection()
    conn.autocommit = True
    try:
        facts = replication.server_facts(conn)
        assert facts.major >= 15 and facts.superuser and facts.lab_server
        assert facts.may_change_settings() is None
        insert_lsn = "SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn"
        with conn.cursor() as cur:
            cur.execute(insert_lsn)
            (before,) = cur.fetchone()
        statement = replication.log_running_transactions(conn)
        assert statement == ("SELECT pg_log_standby_snapshot()" if facts.major >= 16
                             else "CHECKPOINT")  # fmt: skip
        with conn.cursor() as cur:
            cur.execute(insert_lsn)
            assert cur.fetchone()[0] > before, "a record was written"
    finally:
        conn.close()


def test_a_server_the_kit_did_not_start_is_left_alone() -> None:
    facts = replication.ServerFacts(version_num=150018, superuser=True, lab_server=False)
    assert "not started by the kit" in facts.may_change_settings()
    facts = replication.ServerFacts(version_num=180006, superuser=False, lab_server=True)
    assert "not a superuser" in facts.may_change_settings()
