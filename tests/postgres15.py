"""Debian's PostgreSQL 15 (the seed's version) as tests start it: like a learner's own server.

wal_level=logical and a password, none of the kit's other settings (no `cdc_kit.lab_server`,
`max_slot_wal_keep_size` left at -1). Used by the docker-mode parity run and the TLS tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cdc_kit.config import Settings
from cdc_kit.services.home import prepare_home
from cdc_kit.services.postgres import PostgresService
from tests.conftest import skip_unless_ci

PG15_BIN = Path("/usr/lib/postgresql/15/bin")


def needs_postgres15() -> None:
    """Skip without /usr/lib/postgresql/15, except under CI (.ci/run installs it)."""
    if not (PG15_BIN / "postgres").exists():
        reason = f"no PostgreSQL 15 in {PG15_BIN} (apt-get install postgresql-15)"
        skip_unless_ci(reason, reason + ": CI must have it")


class Postgres15(PostgresService):
    """PostgreSQL 15 with what logical replication needs; `extra`: more server settings."""

    name = "postgres15"
    lab_server = False

    def __init__(self, settings: Settings, **extra: str) -> None:
        super().__init__(settings)
        self.bin_dir = PG15_BIN
        self.server_settings = {
            "wal_level": "logical",
            "max_replication_slots": "10",
            "max_wal_senders": "10",
            "listen_addresses": "'127.0.0.1'",
            **extra,
        }


@contextmanager
def postgres15_running(settings: Settings, **extra: str) -> Iterator[Postgres15]:
    """A PostgreSQL 15 started on `settings` (its state in `settings.home`), stopped at exit."""
    prepare_home(settings.home)
    server = Postgres15(settings, **extra)
    try:
        server.ensure_started()
        yield server
    finally:
        server.stop()
