"""Many labs on one workshop server: own ports (CDC_KIT_PORTS=auto), own credentials, privacy."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import clickhouse_connect
import psycopg2
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError
from sqlalchemy import text

from cdc_kit import oltp
from cdc_kit.config import LAB_FILE, Settings, read_lab
from cdc_kit.router import Router
from cdc_kit.stack import Stack, ensure_running
from tests.conftest import run_cli


@pytest.fixture()
def no_lab_env(monkeypatch):
    """Forget the session stack's CDC_KIT_* variables: these labs choose their own ports."""
    for name in [n for n in os.environ if n.startswith("CDC_KIT_")]:
        monkeypatch.delenv(name)


@pytest.fixture()
def two_auto_labs(no_lab_env):
    roots = [Path(tempfile.mkdtemp(prefix=f"cdc_kit_lab{i}_")) for i in (1, 2)]
    for root in roots:
        root.chmod(0o755)
    envs = [{"CDC_KIT_HOME": str(root / "home"), "CDC_KIT_PORTS": "auto"} for root in roots]
    yield envs
    for env, root in zip(envs, roots, strict=True):
        run_cli(env, "down")
        shutil.rmtree(root, ignore_errors=True)


def test_two_labs_with_auto_ports_run_side_by_side(two_auto_labs) -> None:
    stacks = []
    for env in two_auto_labs:
        result = run_cli(env, "up")
        assert result.returncode == 0, result.stderr
        stacks.append(Stack(Settings(home=env["CDC_KIT_HOME"], ports="auto")))
    first, second = (s.settings for s in stacks)
    ports = lambda s: {s.pg_port, s.kafka_port, s.clickhouse_port}  # noqa: E731
    assert not ports(first) & ports(second)
    assert 54329 not in ports(first) | ports(second)  # not the fixed defaults
    status = run_cli(two_auto_labs[0], "status")  # status finds the lab's own ports
    assert status.returncode == 0 and f"127.0.0.1:{first.pg_port}" in status.stdout

    for number, stack in enumerate(stacks, start=1):
        engine = stack.pg_engine()
        oltp.create_all(engine)
        with engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO customer (email, name, country, city) "
                "VALUES (:e, :n, 'NL', 'Ede')"
            ), {"e": f"lab{number}@example.com", "n": f"Lab {number}"})  # fmt: skip
        with Router(stack) as router:
            router.catch_up(timeout=60)
        names = stack.clickhouse().query("SELECT name FROM customer FINAL").result_rows
        assert names == [(f"Lab {number}",)]  # each lab sees only its own change


def test_without_the_labs_credentials_postgres_refuses(stack) -> None:
    s = stack.settings
    assert s.pg_password  # made at the first `up`, never typed by anyone
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        psycopg2.connect(host=s.pg_host, port=s.pg_port, user="postgres", password="guess",
                         dbname=s.pg_database, connect_timeout=3)  # fmt: skip
    with pytest.raises(psycopg2.OperationalError, match="password"):
        psycopg2.connect(host=s.pg_host, port=s.pg_port, user="postgres",
                         dbname=s.pg_database, connect_timeout=3)  # fmt: skip
    with stack.pg_connection() as conn, conn.cursor() as cur:  # the kit's client just works
        cur.execute("SELECT 1")


def test_the_lab_file_and_folder_are_private(stack) -> None:
    home = stack.settings.home
    lab = home / LAB_FILE
    assert stat.S_IMODE(lab.stat().st_mode) == 0o600
    expected = 0o711 if os.geteuid() == 0 else 0o700  # root: postgres's user passes through
    assert stat.S_IMODE(home.stat().st_mode) == expected
    assert set(read_lab(home)) >= {"pg_password", "clickhouse_user", "clickhouse_password"}


def test_a_lab_made_by_an_older_kit_gets_passwords(no_lab_env) -> None:
    """Older kits initialised PostgreSQL with `trust`; `up` switches it to passwords."""
    root = Path(tempfile.mkdtemp(prefix="cdc_kit_old_"))
    root.chmod(0o755)
    env = {"CDC_KIT_HOME": str(root / "home"), "CDC_KIT_PORTS": "auto"}
    try:
        stack = ensure_running(Settings(**{"home": env["CDC_KIT_HOME"], "ports": "auto"}))
        stack.down()
        hba = stack.settings.home / "postgres" / "data" / "pg_hba.conf"
        hba.write_text(hba.read_text().replace("scram-sha-256", "trust"))
        (stack.settings.home / LAB_FILE).unlink()  # an old lab had no lab file either
        stack = ensure_running(Settings(**{"home": env["CDC_KIT_HOME"], "ports": "auto"}))
        assert "trust" not in "".join(
            line for line in hba.read_text().splitlines() if not line.startswith("#")
        )
        s = stack.settings
        with pytest.raises(psycopg2.OperationalError, match="password"):
            psycopg2.connect(host=s.pg_host, port=s.pg_port, user="postgres",
                             dbname="postgres", connect_timeout=3)  # fmt: skip
        with stack.pg_connection() as conn, conn.cursor() as cur:
            cur.execute("SELECT 1")
    finally:
        run_cli(env, "down")
        shutil.rmtree(root, ignore_errors=True)


def test_without_the_labs_credentials_clickhouse_refuses(stack) -> None:
    s = stack.settings
    assert s.clickhouse_password and s.clickhouse_user == "lab"
    for user, password in (("default", ""), ("lab", "guess")):
        with pytest.raises(DatabaseError, match="516"):  # the client asks the server at once
            clickhouse_connect.get_client(
                host=s.clickhouse_host, port=s.clickhouse_port, username=user, password=password
            ).query("SELECT 1")
    url = f"http://{s.clickhouse_host}:{s.clickhouse_port}/?query=SELECT%201"
    with pytest.raises(urllib.error.HTTPError) as refused:  # curl without credentials
        urllib.request.urlopen(url, timeout=5)
    assert refused.value.code == 401
    with_password = f"{url}&user=lab&password={s.clickhouse_password}"
    assert urllib.request.urlopen(with_password, timeout=5).read() == b"1\n"
    assert stack.clickhouse().query("SELECT 1").result_rows == [(1,)]  # the kit's client
