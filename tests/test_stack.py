"""The embedded stack's life cycle through the real CLI: up, status, kill, up again, down, reset."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import make_test_env, run_cli

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
    time.sleep(0.3)
    assert "stopped" in status_lines(env)["broker"]
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
