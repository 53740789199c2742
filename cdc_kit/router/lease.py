"""One router per consumer group: a lock file that the operating system releases for us.

Two routers on one group would read the same partition and commit over each other. The lease
is an exclusive `flock` on `<home>/run/router.<group>.lock`, so it dies with its process (an
interrupted or restarted kernel leaves nothing behind). Inside one process a new Router takes
over from the old one (a notebook cell run twice); another process gets a one-line refusal
that names the process holding the group.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import sys
import threading
import weakref
from pathlib import Path
from typing import Any

import psutil

from cdc_kit.errors import CdcKitError

log = logging.getLogger("cdc_kit.router")

#: Lock file -> the Router of this process that holds it.
_HOLDERS: dict[Path, weakref.ref] = {}
_HOLDERS_LOCK = threading.Lock()


class GroupLease:
    """The right to route one consumer group, held by one Router."""

    def __init__(self, home: Path, group: str, owner: Any) -> None:
        self.path = lock_path(home, group)
        self.group = group
        self._owner = weakref.ref(owner)
        self._file: Any = None

    def acquire(self) -> None:
        """Take the lease, taking over from an older Router of this process if needed."""
        if self._file is not None:
            return
        with _HOLDERS_LOCK:
            holder_ref = _HOLDERS.get(self.path)
        holder = holder_ref() if holder_ref else None
        if holder is not None and holder is not self._owner():
            log.warning("router group %r: taking over from an earlier Router here", self.group)
            holder.close()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")  # noqa: SIM115 - held open for the lease's lifetime
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            text = handle.read()
            handle.close()
            raise CdcKitError(self._refusal(text)) from None
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "command": " ".join(sys.argv)[:200]}))
        handle.flush()
        self._file = handle
        with _HOLDERS_LOCK:
            _HOLDERS[self.path] = self._owner

    def release(self) -> None:
        if self._file is None:
            return
        with _HOLDERS_LOCK:
            if _HOLDERS.get(self.path) is self._owner:
                del _HOLDERS[self.path]
        fcntl.flock(self._file, fcntl.LOCK_UN)
        self._file.close()
        self._file = None

    def _refusal(self, text: str) -> str:
        holder = _describe(text)
        if holder is None:
            return f"router group {self.group!r} is already being routed by another process"
        return (
            f"router group {self.group!r} is already running in pid {holder['pid']} "
            f"({holder['name']}); stop that router (router.close() in its notebook, Ctrl-C, or "
            "restart its kernel), or give this one another group: Router(stack, group='...')"
        )


def lock_path(home: Path, group: str) -> Path:
    return Path(home) / "run" / f"router.{re.sub(r'[^A-Za-z0-9_.-]', '_', group)}.lock"


def lease_holder(home: Path, group: str) -> dict[str, Any] | None:
    """{"pid", "name"} of the process routing `group` now, or None (for `doctor`)."""
    path = lock_path(home, group)
    try:
        handle = open(path)  # noqa: SIM115 - closed below
    except OSError:
        return None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _describe(handle.read()) or {"pid": 0, "name": "?"}
        fcntl.flock(handle, fcntl.LOCK_UN)
    return None


def _describe(text: str) -> dict[str, Any] | None:
    """The holder's pid and a one-line name of its program, from the lock file's text."""
    try:
        holder = json.loads(text)
        pid = int(holder["pid"])
    except (ValueError, KeyError, TypeError):
        return None
    try:
        name = " ".join(psutil.Process(pid).cmdline()[:3])
    except psutil.Error:
        name = holder.get("command", "?")
    name = " ".join(name.split())[:80]  # one line, whatever the command looked like
    if "ipykernel" in name:
        name = f"a Jupyter kernel: {name}"
    return {"pid": pid, "name": name}
