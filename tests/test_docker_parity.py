"""The lessons run unchanged in docker mode, on PostgreSQL 15 (the seed's version), wired as
docker-compose.yaml wires the stack.

No Docker engine exists here. Debian's PostgreSQL 15 stands in for the seed's container: a
server like a learner's own (wal_level=logical, a password, none of the kit's other settings:
no `cdc_kit.lab_server`, `max_slot_wal_keep_size` left at -1). The embedded broker and
ClickHouse stand in for the other containers. All listen on the docker ports (PostgreSQL 5433,
Kafka 19092, ClickHouse 8123). Capture and the router run as separate `python -m cdc_kit
capture|route` processes like the compose services; every solved notebook then runs with
nothing but `CDC_KIT_MODE=docker` and the credentials a compose `.env` would hold.

The embedded PostgreSQL 18 is what every other test runs on; so both ends of the supported
range (15-18) are tested. Where /usr/lib/postgresql/15 is missing (`apt-get install
postgresql-15`) the module is skipped, except under CI, which must run it.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest

from cdc_kit.config import DEFAULT_PORTS, Settings, read_lab
from cdc_kit.scratch_postgres import ScratchPostgres
from cdc_kit.services.process import port_is_free
from cdc_kit.solutions import run_notebook, solve
from tests.conftest import (
    REPO,
    compose_services,
    environment_without_kit_settings,
    run_cli,
    skip_unless_ci,
)
from tests.postgres15 import PG15_BIN, needs_postgres15, postgres15_running

NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9]*.ipynb"))
DOCKER_PORTS = DEFAULT_PORTS["docker"]

#: lesson stem -> what its solved run must print here (the docker lab; PostgreSQL 15's facts).
MUST_SAY: dict[str, list[str]] = {
    "00_your_lab": [f"127.0.0.1:{DOCKER_PORTS['pg_port']}"],  # the lab the learner sees
    "03_logical_replication": [
        "skipped: in docker mode",  # no scratch server of the kit's own in docker mode
        "PostgreSQL 15 wrote each snapshot point with: CHECKPOINT",
        "max_slot_wal_keep_size = -1 (no limit)",
    ],
    "04_raw_delete_events": ["DEFAULT: old K at", "FULL: old O at", "delete marker"],
}


def port_taken(port: int) -> bool:
    """Something listens there (a socket of a just-stopped server in TIME_WAIT does not count)."""
    return not port_is_free("127.0.0.1", port)


@pytest.fixture(scope="module")
def postgres15() -> Iterator[Settings]:
    """PostgreSQL 15 on the docker port, with a password; its settings."""
    needs_postgres15()
    taken = [port for port in DOCKER_PORTS.values() if port_taken(port)]
    if taken:
        reason = f"docker ports in use on this machine: {taken}"
        skip_unless_ci(reason, reason + " (CI must run the docker-mode parity test)")
    root = Path(tempfile.mkdtemp(prefix="cdc_kit_pg15_"))
    root.chmod(0o755)  # as root, the server runs as `nobody`, who must reach its data folder
    settings = Settings(
        mode="embedded",
        home=root / "home",
        pg_host="127.0.0.1",
        pg_port=DOCKER_PORTS["pg_port"],
        pg_user="postgres",
        pg_password=secrets.token_urlsafe(16),
        pg_database="sqlmodel_db",
    )
    try:
        with postgres15_running(settings):
            yield settings
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def docker_env(postgres15: Settings) -> Iterator[dict[str, str]]:
    """The broker and ClickHouse on the docker ports, capture and router as processes;
    yields a kernel's environment in docker mode."""
    root = Path(tempfile.mkdtemp(prefix="cdc_kit_parity_"))
    root.chmod(0o755)
    servers = {
        "CDC_KIT_MODE": "embedded",
        "CDC_KIT_HOME": str(root / "servers"),
        "CDC_KIT_KAFKA_PORT": str(DOCKER_PORTS["kafka_port"]),
        "CDC_KIT_CLICKHOUSE_PORT": str(DOCKER_PORTS["clickhouse_port"]),
    }
    # What a compose service or a learner's shell has in docker mode: the mode and the
    # credentials of a compose .env, nothing else.
    docker = {
        **environment_without_kit_settings(),
        "CDC_KIT_MODE": "docker",
        "CDC_KIT_HOME": str(root / "kit"),
        "CDC_KIT_PG_PASSWORD": postgres15.pg_password,
    }
    try:
        started = run_cli(servers, "up", "--only", "broker", "clickhouse")
        assert started.returncode == 0, started.stdout + started.stderr
        lab = read_lab(Path(servers["CDC_KIT_HOME"]))
        for name in ("clickhouse_user", "clickhouse_password"):
            docker[f"CDC_KIT_{name.upper()}"] = lab[name]
        with compose_services(docker, root):
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
    finally:
        run_cli(servers, "down")
        shutil.rmtree(root, ignore_errors=True)


def test_a_scratch_postgres15_refuses_a_logical_slot_in_its_own_words(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What lesson 03 shows on the embedded binaries, checked on 15's own words."""
    needs_postgres15()
    monkeypatch.setenv("PG_BIN", str(PG15_BIN))
    with ScratchPostgres() as scratch:
        conn = scratch.connect()
        with conn.cursor() as cur:
            cur.execute("SHOW server_version_num")
            assert cur.fetchone()[0].startswith("15")
            with pytest.raises(Exception, match="logical decoding requires"):
                cur.execute("SELECT pg_create_logical_replication_slot('s', 'pgoutput')")
        conn.close()


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_lesson_runs_in_docker_mode_on_postgres15(
    path: Path, docker_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    notebook = solve(path)  # the instructor's copy: a learner's fails in its self-checks
    try:
        seconds = run_notebook(notebook, docker_env)
    finally:  # the outputs, to read what the lesson said
        nbformat.write(notebook, tmp_path / path.name)
    with capsys.disabled():
        print(f"\n    {path.stem}: {seconds:.1f} s solved, docker mode on PostgreSQL 15", end="")
    outputs = "".join(
        str(output.get("text", "")) + str(output.get("data", {}).get("text/plain", ""))
        for cell in notebook.cells
        for output in cell.get("outputs", [])
    )
    for expected in MUST_SAY.get(path.stem, []):
        assert expected in outputs, f"{path.stem} in docker mode does not say {expected!r}"
