"""One router per consumer group: a lock file that the operating system releases for us.

Two routers on one group would read the same partition and commit over each other. The lease
is an exclusive `flock` on `<home>/run/router.<group>.lock`, so it dies with its process (an
interrupted or restarted kernel leaves nothing behind).

A router holds the lease only while it works: one `step()` or `catch_up()`, or for as long as
it routes in the background. A router that wants the group while a background router holds it
leaves a *handover request* beside the lock (`router.<group>.handover`, naming itself) and
waits a few seconds; the background router sees the request between two batches, gives the
group back and says so where it ran. A holder that does not answer in time (a service that
keeps its group, a process that hangs) is named in a one-line refusal.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import psutil

from cdc_kit.errors import FixableError

log = logging.getLogger("cdc_kit.router")

#: How long a router waits for a background router to hand its group over.
HANDOVER_WAIT_S = 5.0


class GroupLease:
    """The right to route one consumer group, held by one router at a time."""

    def __init__(self, home: Path, group: str, hands_over: bool = True) -> None:
        """`hands_over`: whether this holder gives the group to a router that asks for it."""
        self.path = lock_path(home, group)
        self.request_path = self.path.with_suffix(".handover")
        self.group = group
        self.hands_over = hands_over
        self._file: Any = None
        #: Written into the lock file at each acquire: finding it there again means that no
        #: other router held the group since this one last gave it back.
        self._token = uuid.uuid4().hex
        self.undisturbed = False

    @property
    def held(self) -> bool:
        return self._file is not None

    def acquire(self, wait: float = HANDOVER_WAIT_S) -> None:
        """Take the lease; if a router holds it, ask for a handover and wait up to `wait` s."""
        if self._file is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")  # noqa: SIM115 - held open for the lease's lifetime
        try:
            if not _try_lock(handle):
                self._ask_and_wait(handle, wait)
        except BaseException:
            handle.close()
            raise
        handle.seek(0)
        previous = _parse_json(handle.read())
        self.undisturbed = previous is not None and previous.get("token") == self._token
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({**_me(), "hands_over": self.hands_over, "token": self._token}))
        handle.flush()
        self._file = handle

    def release(self) -> None:
        if self._file is None:
            return
        fcntl.flock(self._file, fcntl.LOCK_UN)
        self._file.close()
        self._file = None

    def handover_requested(self) -> dict[str, Any] | None:
        """{"pid", "name"} of a live router asking for the group, or None (cheap: one stat)."""
        if not self.request_path.exists():
            return None
        asker = _read_json(self.request_path)
        if asker is None or not _alive(asker):
            self.request_path.unlink(missing_ok=True)  # left by a router that died waiting
            return None
        return {"pid": asker["pid"], "name": _name(asker)}

    def _ask_and_wait(self, handle: Any, wait: float) -> None:
        holder = _read_json(self.path) or {}
        if holder.get("hands_over") is False:
            raise FixableError(self._refusal(holder, "keeps it"))
        me = _me()
        self.request_path.write_text(json.dumps(me))
        try:
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                time.sleep(0.05)
                if _try_lock(handle):
                    return
            raise FixableError(self._refusal(_read_json(self.path) or holder, "did not answer"))
        finally:
            if _read_json(self.request_path) == me:  # ours, not a newer asker's
                self.request_path.unlink(missing_ok=True)

    def _refusal(self, holder: dict[str, Any], why: str) -> str:
        if "pid" not in holder:
            return f"router group {self.group!r} is already being routed by another process"
        if why == "keeps it":
            reason = "which keeps its group"
        else:
            reason = f"which did not hand it over within {HANDOVER_WAIT_S:.0f} s"
        return (
            f"router group {self.group!r} is routed by pid {holder['pid']} ({_name(holder)}), "
            f"{reason}; stop that router (router.close() or the panel's Stop lab in its "
            "notebook, Ctrl-C, or restart its kernel), or give this one another group: "
            "Router(stack, group='...')"
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
            holder = _read_json(path) or {"pid": 0, "command": "?"}
            return {"pid": holder["pid"], "name": _name(holder)}
        fcntl.flock(handle, fcntl.LOCK_UN)
    return None


def _try_lock(handle: Any) -> bool:
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _me() -> dict[str, Any]:
    """Who this process is: pid, start time (a reused pid is not us) and command."""
    return {
        "pid": os.getpid(),
        "started": psutil.Process().create_time(),
        "command": " ".join(sys.argv)[:200],
    }


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return _parse_json(path.read_text())
    except OSError:
        return None


def _parse_json(text: str) -> dict[str, Any] | None:
    """What a router wrote about itself, or None (empty, half-written or not ours)."""
    try:
        found = json.loads(text)
        int(found["pid"])
    except (ValueError, KeyError, TypeError):
        return None
    return found if isinstance(found, dict) else None


def _alive(who: dict[str, Any]) -> bool:
    try:
        process = psutil.Process(int(who["pid"]))
        return abs(process.create_time() - float(who.get("started", process.create_time()))) < 1
    except (psutil.Error, ValueError, TypeError):
        return False


def _name(who: dict[str, Any]) -> str:
    """A one-line name of a process's program, from psutil or else from what it wrote."""
    try:
        name = " ".join(psutil.Process(int(who["pid"])).cmdline()[:3])
    except (psutil.Error, ValueError, TypeError):
        name = str(who.get("command", "?"))
    name = " ".join(name.split())[:80]  # one line, whatever the command looked like
    if "ipykernel" in name:
        name = f"a Jupyter kernel: {name}"
    return name
