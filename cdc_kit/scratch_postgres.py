"""A throwaway PostgreSQL a lesson may reconfigure and restart: never the lab's server.

It runs the lab's embedded binaries (services.postgres does the work: initdb, running as an
unprivileged user when we are root) in a temporary folder, on a free loopback port, with
PostgreSQL's own defaults for `wal_level` (replica) and `max_slot_wal_keep_size` (-1).
`remove()` stops it and deletes the folder; call it in a `finally` (or use `with`).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import tempfile
from pathlib import Path
from typing import Any

import psutil
import psycopg2

from cdc_kit.config import Settings
from cdc_kit.errors import FixableError
from cdc_kit.services.home import prepare_home
from cdc_kit.services.postgres import SERVER_SETTINGS, PostgresService, find_pg_bin
from cdc_kit.services.process import free_ports, process_alive, wait_until

#: Left at PostgreSQL's own defaults on a scratch server: what a lesson shows.
AT_DEFAULT = ("wal_level", "max_slot_wal_keep_size")
#: The lab's settings but those; no fsync, as nothing on a scratch server is worth keeping.
SCRATCH_SETTINGS = {
    **{key: value for key, value in SERVER_SETTINGS.items() if key not in AT_DEFAULT},
    "fsync": "off",
}


class _ScratchService(PostgresService):
    name = "scratch-postgres"
    server_settings = SCRATCH_SETTINGS
    lab_server = False


def unavailable(settings: Settings) -> str | None:
    """Why no scratch server can start here (one line), or None if one can."""
    if settings.mode == "docker":
        return (
            "in docker mode the lab's PostgreSQL is a container, and the kit starts no "
            "PostgreSQL of its own"
        )
    try:
        find_pg_bin()
    except FixableError as exc:
        return str(exc)
    return None


class ScratchPostgres:
    """PostgreSQL in a temporary folder on a free loopback port; `remove()` leaves nothing.

    scratch = ScratchPostgres()
    try:
        scratch.start()
        conn = scratch.connect()
        ...
        scratch.restart()
    finally:
        scratch.remove()
    """

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="cdc_kit_scratch_pg_"))
        self.root.chmod(0o755)  # as root, the server's unprivileged user must reach its data
        (port,) = free_ports(1)
        self.settings = Settings(
            mode="embedded",
            home=self.root / "home",
            pg_host="127.0.0.1",
            pg_port=port,
            pg_user="postgres",
            pg_password=secrets.token_urlsafe(16),
            pg_database="postgres",
        )
        prepare_home(self.settings.home)  # run/ and logs/ for the service's pid and log files
        self.service = _ScratchService(self.settings)

    @property
    def port(self) -> int:
        return int(self.settings.pg_port or 0)

    def start(self) -> ScratchPostgres:
        """initdb on the first start, then start the server and wait until it answers."""
        self.service.ensure_started()
        return self

    def restart(self) -> None:
        """Stop and start again: how settings such as wal_level take effect."""
        self.service.stop()
        self.service.ensure_started()

    def connect(self) -> Any:
        """A new psycopg2 connection as the superuser `postgres`, in autocommit mode."""
        conn = psycopg2.connect(
            host=self.settings.pg_host,
            port=self.port,
            user=self.settings.pg_user,
            password=self.settings.pg_password,
            dbname="postgres",
            connect_timeout=5,
        )
        conn.autocommit = True
        return conn

    def remove(self) -> None:
        """Stop the server (even one whose start was interrupted) and delete its folder."""
        try:
            self.service.stop()
            self._stop_leftover()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def _stop_leftover(self) -> None:
        """A postmaster the pid file does not know (interrupted between spawn and record)."""
        try:
            pid = int((self.service.data_dir / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return
        try:  # ours only: a postgres started on this very data folder
            ours = str(self.service.data_dir) in psutil.Process(pid).cmdline()
        except psutil.Error:
            return
        if ours:
            os.kill(pid, signal.SIGQUIT)  # immediate shutdown: nothing here is worth a checkpoint
            wait_until(lambda: not process_alive(pid), timeout=10.0)

    def __enter__(self) -> ScratchPostgres:
        try:
            return self.start()
        except BaseException:
            self.remove()
            raise

    def __exit__(self, *exc: object) -> None:
        self.remove()
