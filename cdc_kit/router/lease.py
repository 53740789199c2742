"""One router per consumer group: a lock file that the operating system releases for us.

Two routers on one group would read the same partition and commit over each other. The lease
is an exclusive `flock` on `<home>/run/router.<group>.lock`, so it dies with its process (an
interrupted or restarted kernel leaves nothing behind). Where there is no `flock` (Windows), an
owner file made with O_EXCL names the holding process (pid and start time) and is taken over
once that process is gone, which psutil tells, a reused pid included.

A router holds the lease only while it works: one `step()` or `catch_up()`, or for as long as
it routes in the background. A router that wants the group while a background router holds it
leaves a *handover request* beside the lock (`router.<group>.handover`, naming itself) and
waits a few seconds; the background router sees the request between two batches, gives the
group back and says so where it ran. A holder that does not answer in time (a service that
keeps its group, a process that hangs) is named in a one-line refusal.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sys
import time
import uuid
import weakref
from pathlib import Path
from typing import Any, Protocol

try:
    import fcntl
except ImportError:  # Windows: OwnerFileLock below
    fcntl = None  # type: ignore[assignment]

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
        self._lock: OsLock = LOCK_KIND(self.path)
        self._held = False
        #: Written into the lock file at each acquire: finding it there again means that no
        #: other router held the group since this one last gave it back.
        self._token = uuid.uuid4().hex
        self.undisturbed = False

    @property
    def held(self) -> bool:
        return self._held

    def acquire(self, wait: float = HANDOVER_WAIT_S) -> None:
        """Take the lease; if a router holds it, ask for a handover and wait up to `wait` s."""
        if self._held:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            if not self._lock.try_acquire():
                self._ask_and_wait(wait)
        except BaseException:
            self._lock.release()
            raise
        previous = _parse_json(self._lock.read())
        self.undisturbed = previous is not None and previous.get("token") == self._token
        self._lock.write(
            json.dumps({**_me(), "hands_over": self.hands_over, "token": self._token})
        )
        self._held = True

    def release(self) -> None:
        if not self._held:
            return
        self._lock.release()
        self._held = False

    def handover_requested(self) -> dict[str, Any] | None:
        """{"pid", "name"} of a live router asking for the group, or None (cheap: one stat)."""
        if not self.request_path.exists():
            return None
        asker = _read_json(self.request_path)
        if asker is None or not _alive(asker):
            self.request_path.unlink(missing_ok=True)  # left by a router that died waiting
            return None
        return {"pid": asker["pid"], "name": _name(asker)}

    def _ask_and_wait(self, wait: float) -> None:
        holder = _read_json(self.path) or {}
        if holder.get("hands_over") is False:
            raise FixableError(self._refusal(holder, "keeps it"))
        me = _me()
        self.request_path.write_text(json.dumps(me))
        try:
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                time.sleep(0.05)
                if self._lock.try_acquire():
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
    if not LOCK_KIND.is_held(path):
        return None
    holder = _read_json(path) or {"pid": 0, "command": "?"}
    return {"pid": holder["pid"], "name": _name(holder)}


class OsLock(Protocol):
    """An exclusive lock on one lock file that ends with its process, and the file's text."""

    def __init__(self, path: Path) -> None: ...

    def try_acquire(self) -> bool: ...

    def release(self) -> None: ...

    def read(self) -> str: ...

    def write(self, text: str) -> None: ...

    @staticmethod
    def is_held(path: Path) -> bool:
        """Whether any process holds the lock on `path` now (a probe that takes nothing)."""
        ...


class FlockLock:
    """`flock` on the lock file itself: the kernel releases it when the process ends."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: Any = None

    def try_acquire(self) -> bool:
        if self._file is None:
            self._file = open(self.path, "a+")  # noqa: SIM115 - held open for the lease
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    def read(self) -> str:
        self._file.seek(0)
        return str(self._file.read())

    def write(self, text: str) -> None:
        self._file.seek(0)
        self._file.truncate()
        self._file.write(text)
        self._file.flush()

    @staticmethod
    def is_held(path: Path) -> bool:
        try:
            handle = open(path)  # noqa: SIM115 - closed below
        except OSError:
            return False
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
        return False


#: Owner files that this process holds, by the id written in them: an owner file naming this
#: process but no lock object alive here was left by a lease that was never released.
_OWNED_HERE: weakref.WeakValueDictionary[str, OwnerFileLock] = weakref.WeakValueDictionary()

#: An owner file still empty after this many seconds lost its writer between create and write.
UNWRITTEN_OWNER_S = 5.0


class OwnerFileLock:
    """A portable lock: `<lock>.owner`, created with O_EXCL, names its process (pid and start
    time, and this lock's id); whoever finds it naming a process that is gone takes it over.

    The lock file beside it keeps the holder's details (and token) as with `flock`.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.owner_path = path.with_suffix(".owner")
        self._id = uuid.uuid4().hex
        self._held = False

    def try_acquire(self) -> bool:
        if self._held:
            return True
        for _ in range(3):  # create; else break a dead owner's file and create again
            me = {**_me(), "lock": self._id}
            try:
                fd = os.open(self.owner_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
            except FileExistsError:
                if not _break_if_dead(self.owner_path):
                    return False
                continue
            with os.fdopen(fd, "w") as handle:
                handle.write(json.dumps(me))
            self._held = True
            _OWNED_HERE[self._id] = self
            return True
        return False

    def release(self) -> None:
        if self._held:
            owner = _read_json(self.owner_path)
            if owner is not None and owner.get("lock") == self._id:  # never another's
                self.owner_path.unlink(missing_ok=True)
            _OWNED_HERE.pop(self._id, None)
            self._held = False

    def __del__(self) -> None:
        # A lease dropped without release() frees its group, as a closed flock does (at
        # interpreter exit the module may be half gone: the dead pid frees it then).
        with contextlib.suppress(OSError, TypeError, AttributeError):
            self.release()

    def read(self) -> str:
        try:
            return self.path.read_text()
        except OSError:
            return ""

    def write(self, text: str) -> None:
        self.path.write_text(text)

    @staticmethod
    def is_held(path: Path) -> bool:
        owner_path = path.with_suffix(".owner")
        return owner_path.exists() and not _owner_is_dead(owner_path)


def _owner_is_dead(owner_path: Path) -> bool:
    """Whether an owner file names a process (or a lock of this process) that is gone."""
    owner = _read_json(owner_path)
    if owner is None:  # being written now, or its writer died right after creating it
        try:
            return time.time() - owner_path.stat().st_mtime > UNWRITTEN_OWNER_S
        except OSError:
            return True
    if not _alive(owner):
        return True
    return owner["pid"] == os.getpid() and owner.get("lock") not in _OWNED_HERE


def _break_if_dead(owner_path: Path) -> bool:
    """Remove an owner file whose process is gone; True if it is gone now.

    It is first renamed to a name of our own (one of two breakers wins); if what we moved was
    meanwhile a live owner's new file, it is put back.
    """
    if not _owner_is_dead(owner_path):
        return False
    moved = owner_path.with_name(f"{owner_path.name}.{uuid.uuid4().hex}")
    try:
        os.rename(owner_path, moved)
    except FileNotFoundError:
        return True  # another router broke it first: try to create it
    except OSError:
        return False
    if _owner_is_dead(moved):
        moved.unlink(missing_ok=True)
        return True
    # Put a live owner's file back, unless a third router made a new one meanwhile.
    with contextlib.suppress(OSError):
        os.link(moved, owner_path)
    moved.unlink(missing_ok=True)
    return False


#: flock where the operating system has it, else the owner file.
LOCK_KIND: type[FlockLock] | type[OwnerFileLock] = FlockLock if fcntl is not None else OwnerFileLock


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
