"""The state folder (`CDC_KIT_HOME`, default `.cdc_kit/`): databases, logs, pid files.

A marker file says "this folder belongs to cdc-kit" (so `reset` never deletes anything else)
and which layout version made it, so a folder from an older kit is upgraded by `up`, and one
from a newer kit is refused with a one-line reason instead of being misread.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cdc_kit.config import LAB_CREDENTIALS, LAB_FILE, LAB_PORTS, Settings, read_lab
from cdc_kit.errors import FixableError
from cdc_kit.services.process import free_ports, is_root

MARKER = ".cdc_kit_home"
#: 1: the first kits (an empty marker); 2: the marker holds the version.
LAYOUT_VERSION = 2

#: version -> the step that brings a folder of that version to the next one.
UPGRADES: dict[int, Callable[[Path], None]] = {
    1: lambda home: None,  # nothing moved: tables get their new server defaults at create_all
}


def is_state_folder(home: Path) -> bool:
    return (home / MARKER).exists()


def layout_version(home: Path) -> int | None:
    """The layout version of an existing state folder, None for a new (or foreign) folder."""
    try:
        text = (home / MARKER).read_text().strip()
    except OSError:
        return None
    if not text:
        return 1
    try:
        return int(text.removeprefix("layout "))
    except ValueError:
        return 0  # unreadable: treated like a folder from an unknown kit


def prepare_home(home: Path) -> None:
    """Create the state folder, or bring an older one up to date; explain in one line if not."""
    version = layout_version(home)
    if version is not None and version != LAYOUT_VERSION:
        if version not in UPGRADES or version > LAYOUT_VERSION:
            raise FixableError(
                f"the state folder {home} was made by another version of cdc-kit "
                f"(layout {version}, this kit uses {LAYOUT_VERSION}); run "
                "`python -m cdc_kit reset` to start from scratch (it deletes the lab's data)"
            )
        while version < LAYOUT_VERSION:
            UPGRADES[version](home)
            version += 1
    try:
        home.mkdir(parents=True, exist_ok=True)
        # Private: on a shared server another user must not read this lab's data or logs. As
        # root, PostgreSQL runs as an unprivileged user who must pass through (not list) it.
        home.chmod(0o711 if is_root() else 0o700)
        for sub in ("run", "logs"):
            (home / sub).mkdir(exist_ok=True, mode=0o700)
        (home / MARKER).write_text(f"layout {LAYOUT_VERSION}\n")
    except OSError as exc:
        raise FixableError(
            f"cannot write the state folder {home}: {exc.strerror or exc}; "
            f"set CDC_KIT_HOME to a writable folder"
        ) from exc


# ---- the lab file: this lab's credentials and (with CDC_KIT_PORTS=auto) its ports -------------
def ensure_lab(settings: Settings, new_ports: bool = False) -> bool:
    """Make the lab file's missing parts; True if it changed (settings must then be reloaded).

    Credentials: a PostgreSQL password and a ClickHouse user and password, made once (or
    taken from the settings when given explicitly) and used by every kit client without
    anyone typing them. Ports (ports=auto): free loopback
    ports, chosen once, or again with `new_ports` (another program took one meanwhile).
    """
    home = settings.home
    lab = read_lab(home)
    wanted: dict[str, Any] = dict(lab)
    for name in LAB_CREDENTIALS:
        # Credentials given explicitly are what every client sends: the servers must use them.
        if settings.is_explicit(name) and getattr(settings, name):
            wanted[name] = getattr(settings, name)
    wanted.setdefault("pg_password", secrets.token_urlsafe(18))
    wanted.setdefault("clickhouse_user", "lab")
    wanted.setdefault("clickhouse_password", secrets.token_urlsafe(18))
    if settings.ports == "auto" and (new_ports or not all(wanted.get(p) for p in LAB_PORTS)):
        wanted.update(zip(LAB_PORTS, free_ports(len(LAB_PORTS)), strict=True))
    if wanted == lab:
        return False
    path = home / LAB_FILE
    tmp = path.with_suffix(".tmp")
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as handle:
        json.dump(wanted, handle, indent=2)
    tmp.replace(path)
    return True
