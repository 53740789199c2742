"""The embedded stack's life cycle through the real CLI: up, status, kill, up again, down, reset."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
import pytest
from sqlalchemy import text

from cdc_kit import oltp
from cdc_kit.services.home import LAYOUT_VERSION
from cdc_kit.services.process import wait_until
from cdc_kit.stack import Stack
from tests.conftest import environment_without_kit_settings, make_test_env, run_cli, settings_from

SERVICES = ("postgres", "broker", "clickhouse")


def pids(env: dict[str, str]) -> dict[str, int]:
    run = Path(env["CDC_KIT_HOME"]) / "run"
    return {
        path.stem: json.loads(path.read_text())["pid"]
        for path in run.glob("*.json")
        if path.stem in SERVICES
    }


def status_lines(env: dict[str, str]) -> dict[str, str]:
    result = run_cli(env, "status")
    return {
        line.split()[0]: line for line in result.stdout.splitlines() if line.split()[0] in SERVICES
    }


@pytest.fixture()
def lifecycle_env():
    env = make_test_env("cdc_kit_lifecycle_")
    yield env
    run_cli(env, "down")
    shutil.rmtree(Path(env["CDC_KIT_HOME"]).parent, ignore_errors=True)


def test_up_status_kill_restart_down(lifecycle_env: dict[str, str]) -> None:
    env = lifecycle_env
    first = run_cli(env, "up", "--only", *SERVICES)
    assert first.returncode == 0, first.stderr
    lines = status_lines(env)
    assert set(lines) == set(SERVICES)
    assert all("healthy" in line and "unhealthy" not in line for line in lines.values()), lines
    assert f"127.0.0.1:{env['CDC_KIT_PG_PORT']}" in lines["postgres"]
    started = pids(env)
    assert set(started) == set(SERVICES)

    # A second `up` while everything runs changes nothing.
    second = run_cli(env, "up", "--only", *SERVICES)
    assert second.returncode == 0, second.stderr
    assert second.stdout.count("already running") == len(SERVICES)
    assert pids(env) == started

    # A killed service is reported and brought back by `up`.
    os.kill(started["broker"], signal.SIGKILL)
    assert wait_until(lambda: "stopped" in status_lines(env)["broker"], timeout=10)
    assert run_cli(env, "status").returncode != 0
    third = run_cli(env, "up", "--only", *SERVICES)
    assert third.returncode == 0, third.stderr
    restarted = pids(env)
    assert restarted["broker"] != started["broker"]
    assert restarted["postgres"] == started["postgres"]
    assert "healthy" in status_lines(env)["broker"]

    # `down` leaves no process behind.
    down = run_cli(env, "down")
    assert down.returncode == 0, down.stderr
    for name, pid in restarted.items():
        assert not _alive(pid), f"{name} (pid {pid}) still runs after down"
    assert all("stopped" in line for line in status_lines(env).values())


def test_reset_removes_state_and_refuses_foreign_folders(lifecycle_env: dict[str, str]) -> None:
    env = lifecycle_env
    assert run_cli(env, "up", "--only", "postgres").returncode == 0
    home = Path(env["CDC_KIT_HOME"])
    assert (home / "postgres" / "data" / "PG_VERSION").exists()
    result = run_cli(env, "reset")
    assert result.returncode == 0, result.stderr
    assert not home.exists()

    foreign = home.parent / "not_ours"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("keep me")
    result = run_cli({**env, "CDC_KIT_HOME": str(foreign)}, "reset")
    assert result.returncode == 1
    assert "not a cdc-kit state folder" in result.stderr
    assert (foreign / "precious.txt").exists()


def test_port_in_use_is_one_clear_line(lifecycle_env: dict[str, str]) -> None:
    env = lifecycle_env
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", int(env["CDC_KIT_KAFKA_PORT"])))
    blocker.listen()
    try:
        result = run_cli(env, "up", "--only", "broker")
    finally:
        blocker.close()
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: broker: port ")
    assert "CDC_KIT_KAFKA_PORT" in lines[0]


def test_unwritable_state_folder_is_one_clear_line(lifecycle_env: dict[str, str]) -> None:
    # A path below a regular file can never be created, whoever runs the test (root included).
    blocker = Path(lifecycle_env["CDC_KIT_HOME"]).parent / "a_file"
    blocker.write_text("")
    result = run_cli({**lifecycle_env, "CDC_KIT_HOME": str(blocker / "home")}, "up")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error: cannot write the state folder")
    assert len(result.stderr.strip().splitlines()) == 1


def test_bad_setting_is_one_clear_line(lifecycle_env: dict[str, str]) -> None:
    result = run_cli({**lifecycle_env, "CDC_KIT_PG_PORT": "not-a-port"}, "status")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "CDC_KIT_PG_PORT" in result.stderr


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def test_docker_mode_only_checks_that_services_answer(stack, lifecycle_env) -> None:
    """With CDC_KIT_MODE=docker, `up`/`status` start nothing and only probe the ports."""
    s = stack.settings
    reachable = {
        **lifecycle_env,
        "CDC_KIT_MODE": "docker",
        "CDC_KIT_PG_PORT": str(s.pg_port),
        "CDC_KIT_KAFKA_PORT": str(s.kafka_port),
        "CDC_KIT_CLICKHOUSE_PORT": str(s.clickhouse_port),
    }
    result = run_cli(reachable, "up")
    assert result.returncode == 0, result.stderr
    assert "mode: docker" in result.stdout
    assert not (Path(lifecycle_env["CDC_KIT_HOME"]) / "run").exists()  # nothing was started

    unreachable = {**lifecycle_env, "CDC_KIT_MODE": "docker"}  # the free test ports
    result = run_cli(unreachable, "up")
    assert result.returncode == 1
    assert result.stderr.startswith("error: docker mode: not reachable: postgres")
    assert "CDC_KIT_MODE=embedded" in result.stderr


def test_demo_runs_on_a_fresh_state_folder(lifecycle_env: dict[str, str]) -> None:
    """As a new user types it: nothing started yet, nothing created, one command."""
    result = run_cli(lifecycle_env, "demo", timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert "PostgreSQL and ClickHouse FINAL agree" in result.stdout
    assert "with FINAL the row is gone: []" in result.stdout


@pytest.mark.skipif(os.geteuid() != 0, reason="PostgreSQL runs as another user only under root")
def test_a_private_state_folder_under_root_names_the_folder_and_the_fix(lifecycle_env) -> None:
    private = Path(tempfile.mkdtemp(prefix="cdc_kit_private_"))  # mode 700, as mktemp -d makes
    try:
        result = run_cli({**lifecycle_env, "CDC_KIT_HOME": str(private / "home")}, "up",
                         "--only", "postgres")  # fmt: skip
        assert result.returncode == 1
        assert "Traceback" not in result.stderr
        assert f"cannot enter {private} (mode drwx------" in result.stderr
        assert f"chmod o+x {private}" in result.stderr
        private.chmod(0o711)  # exactly what the message says
        result = run_cli({**lifecycle_env, "CDC_KIT_HOME": str(private / "home")}, "up",
                         "--only", "postgres")  # fmt: skip
        assert result.returncode == 0, result.stderr
    finally:
        run_cli({**lifecycle_env, "CDC_KIT_HOME": str(private / "home")}, "down")
        shutil.rmtree(private, ignore_errors=True)


def test_a_state_folder_of_an_older_kit_is_upgraded_and_a_newer_one_refused(lifecycle_env):
    home = Path(lifecycle_env["CDC_KIT_HOME"])
    home.mkdir(parents=True)
    (home / ".cdc_kit_home").write_text("")  # what the first kits wrote
    result = run_cli(lifecycle_env, "up", "--only", "broker")
    assert result.returncode == 0, result.stderr
    assert (home / ".cdc_kit_home").read_text().strip() == f"layout {LAYOUT_VERSION}"

    (home / ".cdc_kit_home").write_text(f"layout {LAYOUT_VERSION + 1}\n")
    result = run_cli(lifecycle_env, "up", "--only", "broker")
    assert result.returncode == 1
    assert "python -m cdc_kit reset" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_raw_sql_as_a_learner_types_it_fills_the_defaulted_columns(stack) -> None:
    engine = stack.pg_engine()
    oltp.create_all(engine)
    with engine.begin() as conn:
        customer = conn.execute(text(
            "INSERT INTO customer (email, name, country, city) "
            "VALUES ('raw@example.com', 'Raw Sql', 'NL', 'Ede') RETURNING id"
        )).scalar_one()  # fmt: skip
        order = conn.execute(text(
            'INSERT INTO "order" ("customerId", total) VALUES (:c, 12.50) RETURNING id'
        ), {"c": customer}).scalar_one()  # fmt: skip
        product = conn.execute(text("SELECT min(id) FROM product")).scalar_one()
        if product is None:
            product = conn.execute(text(
                "INSERT INTO product (name, category, price) VALUES ('Mug', 'kitchen', 5) "
                "RETURNING id"
            )).scalar_one()  # fmt: skip
        conn.execute(text(
            'INSERT INTO orderitem ("orderId", "productId", quantity, price) '
            "VALUES (:o, :p, 1, 12.50)"
        ), {"o": order, "p": product})  # fmt: skip
        status, dated = conn.execute(
            text('SELECT status, "orderDate" IS NOT NULL FROM "order" WHERE id = :o'), {"o": order}
        ).one()
    assert (status, dated) == ("pending", True)


def test_clickhouse_credentials_given_explicitly_are_the_ones_the_endpoint_serves(
    lifecycle_env: dict[str, str],
) -> None:
    """Clients send explicit CDC_KIT_CLICKHOUSE_USER/PASSWORD; the endpoint once served the
    lab file's generated ones instead, and every query was refused (516) after a green `up`."""
    given = {"CDC_KIT_CLICKHOUSE_USER": "alice", "CDC_KIT_CLICKHOUSE_PASSWORD": "w0nder"}
    env = {**lifecycle_env, **given}
    started = run_cli(env, "up", "--only", "clickhouse")
    assert started.returncode == 0, started.stdout + started.stderr
    stack = Stack(settings_from(env))
    s = stack.settings
    assert (s.clickhouse_user, s.clickhouse_password) == ("alice", "w0nder")
    assert stack.clickhouse().query("SELECT 42").result_rows == [(42,)]


def test_settings_follow_the_lab_file_of_a_state_folder_named_in_dot_env(tmp_path: Path) -> None:
    """`.env` may name the state folder; the lab file `up` writes there must not be missed by
    the settings cache (it once looked only at CDC_KIT_HOME in the environment)."""
    (tmp_path / ".env").write_text(f"CDC_KIT_HOME={tmp_path / 'home'}\n")
    (tmp_path / "home").mkdir()
    probe = (
        "import json, pathlib\n"
        "from cdc_kit.config import LAB_FILE, get_settings\n"
        "before = get_settings()\n"
        "pathlib.Path(before.home, LAB_FILE).write_text(json.dumps({'pg_password': 'new'}))\n"
        "print(before.pg_password or '-', get_settings().pg_password)\n"
    )
    env = environment_without_kit_settings()
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["-", "new"]
