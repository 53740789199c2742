"""The lessons run unchanged in docker mode, wired as docker-compose.yaml wires the stack.

No Docker engine exists here, so the embedded services stand in for the containers on the
docker ports (PostgreSQL 5433, Kafka 19092, ClickHouse 8123); capture and the router run as
separate `python -m cdc_kit capture|route` processes like the compose services; the notebooks
then run with nothing but `CDC_KIT_MODE=docker`, as a learner's kernel would.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from cdc_kit.config import DEFAULT_PORTS, read_lab
from cdc_kit.services.process import port_is_free
from cdc_kit.solutions import run_notebook, solve
from tests.conftest import REPO, environment_without_kit_settings, run_cli, skip_unless_ci

NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9]*.ipynb"))
DOCKER_PORTS = DEFAULT_PORTS["docker"]


def port_taken(port: int) -> bool:
    """Something listens there (a socket of a just-stopped server in TIME_WAIT does not count)."""
    return not port_is_free("127.0.0.1", port)


@pytest.fixture(scope="module")
def docker_env() -> Iterator[dict[str, str]]:
    """Services on the docker ports, capture and router as processes; yields a kernel's env."""
    taken = [port for port in DOCKER_PORTS.values() if port_taken(port)]
    if taken:
        reason = f"docker ports in use on this machine: {taken}"
        skip_unless_ci(reason, reason + " (CI must run the docker-mode parity test)")
    root = Path(tempfile.mkdtemp(prefix="cdc_kit_parity_"))
    root.chmod(0o755)  # reachable for the unprivileged PostgreSQL user when run as root
    servers = {
        "CDC_KIT_MODE": "embedded",
        "CDC_KIT_HOME": str(root / "servers"),
        **{f"CDC_KIT_{name.upper()}": str(port) for name, port in DOCKER_PORTS.items()},
    }
    # What a compose service or a learner's shell has in docker mode: the mode, nothing else.
    docker = {
        **environment_without_kit_settings(),
        "CDC_KIT_MODE": "docker",
        "CDC_KIT_HOME": str(root / "kit"),
    }
    logs = {name: (root / f"{name}.log").open("w") for name in ("capture", "route")}
    processes: dict[str, subprocess.Popen] = {}
    try:
        started = run_cli(servers, "up", "--only", "postgres", "broker", "clickhouse")
        assert started.returncode == 0, started.stdout + started.stderr
        # The servers made their own credentials at `up`: a compose .env would hold them.
        lab = read_lab(Path(servers["CDC_KIT_HOME"]))
        for name in ("pg_password", "clickhouse_user", "clickhouse_password"):
            docker[f"CDC_KIT_{name.upper()}"] = lab[name]
        for name in ("capture", "route"):
            # The router service routes its own consumer group, as in docker-compose.yaml.
            group = {"CDC_KIT_ROUTER_GROUP": "cdc_kit_router_service"} if name == "route" else {}
            processes[name] = subprocess.Popen(
                [sys.executable, "-m", "cdc_kit", name],
                env={**docker, **group},
                cwd=REPO,
                stdout=logs[name],
                stderr=subprocess.STDOUT,
            )
        checked = subprocess.run(
            [sys.executable, "-m", "cdc_kit", "status"],
            env=docker,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr
        yield docker
        for name, process in processes.items():
            assert process.poll() is None, f"{name} exited: {(root / f'{name}.log').read_text()}"
    finally:
        for process in processes.values():
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
        for log in logs.values():
            log.close()
        run_cli(servers, "down")
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_lesson_runs_in_docker_mode(path: Path, docker_env: dict[str, str]) -> None:
    notebook = solve(path)  # the instructor's copy: a learner's fails in its self-checks
    run_notebook(notebook, docker_env)
    outputs = "".join(
        str(output.get("text", "")) + str(output.get("data", {}).get("text/plain", ""))
        for cell in notebook.cells
        for output in cell.get("outputs", [])
    )
    if path.name.startswith("00_"):  # the lab the learner sees is the docker one
        assert f"127.0.0.1:{DOCKER_PORTS['pg_port']}" in outputs, outputs
