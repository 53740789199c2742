"""The lessons run on PostgreSQL 15, the version the seed runs, in docker mode.

A PostgreSQL 15 server like a learner's own (Debian's binaries, wal_level=logical, a password,
none of the kit's other settings: no `cdc_kit.lab_server`, `max_slot_wal_keep_size` left at
-1) stands in for the seed's container; the embedded broker and ClickHouse for the others;
capture runs as `python -m cdc_kit capture`, and the solved notebooks with `CDC_KIT_MODE=docker`.
Skipped where /usr/lib/postgresql/15 is missing (`apt-get install postgresql-15`).

To check another lesson on 15, add its stem and what its outputs must say to `ON_POSTGRES15`.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest

from cdc_kit.config import Settings, read_lab
from cdc_kit.scratch_postgres import ScratchPostgres
from cdc_kit.services.home import prepare_home
from cdc_kit.services.postgres import PostgresService
from cdc_kit.services.process import free_ports
from cdc_kit.solutions import NOTEBOOKS, run_notebook, solve
from tests.conftest import REPO, environment_without_kit_settings, run_cli

PG15_BIN = Path("/usr/lib/postgresql/15/bin")

pytestmark = pytest.mark.skipif(
    not (PG15_BIN / "postgres").exists(),
    reason=f"no PostgreSQL 15 in {PG15_BIN} (apt-get install postgresql-15)",
)

#: lesson stem -> what its solved run must print on PostgreSQL 15 (version-dependent facts).
ON_POSTGRES15: dict[str, list[str]] = {
    "03_logical_replication": [
        "skipped: in docker mode",  # no scratch server of the kit's own in docker mode
        "PostgreSQL 15 wrote each snapshot point with: CHECKPOINT",
        "max_slot_wal_keep_size = -1 (no limit)",
    ],
    "04_raw_delete_events": ["DEFAULT: old K at", "FULL: old O at", "delete marker"],
}


class Postgres15(PostgresService):
    """Debian's PostgreSQL 15 with what logical replication needs, and nothing of the kit's."""

    name = "postgres15"
    server_settings = {
        "wal_level": "logical",
        "max_replication_slots": "10",
        "max_wal_senders": "10",
        "listen_addresses": "'127.0.0.1'",
    }
    lab_server = False

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.bin_dir = PG15_BIN


@pytest.fixture(scope="module")
def postgres15() -> Iterator[Settings]:
    """A running PostgreSQL 15 on a free loopback port; its settings (port, password)."""
    root = Path(tempfile.mkdtemp(prefix="cdc_kit_pg15_"))
    root.chmod(0o755)  # as root, the server runs as `nobody`, who must reach its data folder
    (port,) = free_ports(1)
    settings = Settings(
        mode="embedded",
        home=root / "home",
        pg_host="127.0.0.1",
        pg_port=port,
        pg_user="postgres",
        pg_password=secrets.token_urlsafe(16),
        pg_database="sqlmodel_db",
    )
    prepare_home(settings.home)
    server = Postgres15(settings)
    try:
        server.ensure_started()
        yield settings
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def docker_lab_on_postgres15(postgres15: Settings) -> Iterator[dict[str, str]]:
    """PostgreSQL 15, the embedded broker and ClickHouse, capture as a process: a kernel's
    environment in docker mode, as a learner with the seed's PostgreSQL 15 would have it."""
    root = Path(tempfile.mkdtemp(prefix="cdc_kit_pg15_lab_"))
    kafka, clickhouse = free_ports(2)
    servers = {
        "CDC_KIT_MODE": "embedded",
        "CDC_KIT_HOME": str(root / "servers"),
        "CDC_KIT_KAFKA_PORT": str(kafka),
        "CDC_KIT_CLICKHOUSE_PORT": str(clickhouse),
    }
    docker = {
        **environment_without_kit_settings(),
        "CDC_KIT_MODE": "docker",
        "CDC_KIT_HOME": str(root / "kit"),
        "CDC_KIT_PG_PORT": str(postgres15.pg_port),
        "CDC_KIT_PG_PASSWORD": postgres15.pg_password,
        "CDC_KIT_KAFKA_PORT": str(kafka),
        "CDC_KIT_CLICKHOUSE_PORT": str(clickhouse),
    }
    capture: subprocess.Popen[Any] | None = None
    log = (root / "capture.log").open("w")
    try:
        started = run_cli(servers, "up", "--only", "broker", "clickhouse")
        assert started.returncode == 0, started.stdout + started.stderr
        lab = read_lab(Path(servers["CDC_KIT_HOME"]))
        for name in ("clickhouse_user", "clickhouse_password"):
            docker[f"CDC_KIT_{name.upper()}"] = lab[name]
        capture = subprocess.Popen(
            [sys.executable, "-m", "cdc_kit", "capture"],
            env=docker, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        yield docker
        assert capture.poll() is None, f"capture exited: {(root / 'capture.log').read_text()}"
    finally:
        if capture is not None:
            capture.terminate()
            try:
                capture.wait(30)
            except subprocess.TimeoutExpired:
                capture.kill()
        log.close()
        run_cli(servers, "down")
        shutil.rmtree(root, ignore_errors=True)


def test_a_scratch_postgres15_refuses_a_logical_slot_in_its_own_words(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
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
@pytest.mark.parametrize("stem", sorted(ON_POSTGRES15))
def test_solved_lesson_runs_on_postgres15_in_docker_mode(
    stem: str,
    docker_lab_on_postgres15: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    notebook = solve(NOTEBOOKS / f"{stem}.ipynb")
    try:
        seconds = run_notebook(notebook, docker_lab_on_postgres15)
    finally:  # the outputs, to read what the lesson said on 15
        nbformat.write(notebook, tmp_path / f"{stem}.ipynb")
    with capsys.disabled():
        print(f"\n    {stem}: {seconds:.1f} s solved, on PostgreSQL 15 in docker mode", end="")
    outputs = "".join(
        str(output.get("text", "")) + str(output.get("data", {}).get("text/plain", ""))
        for cell in notebook.cells
        for output in cell.get("outputs", [])
    )
    for expected in ON_POSTGRES15[stem]:
        assert expected in outputs, f"{stem} on PostgreSQL 15 does not say {expected!r}"
