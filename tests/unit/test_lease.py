"""The router's group lease, with `flock` and with the portable owner file (Windows has no
fcntl): one holder at a time, freed when its process dies, a handover on request, the token.

Other processes that hold a lease are real Python processes; for the owner file their `fcntl`
is blocked, as on Windows.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest

from cdc_kit.errors import FixableError
from cdc_kit.router import lease
from cdc_kit.router.lease import GroupLease, lease_holder
from tests.blocked_imports import blocked_env

REPO = Path(__file__).resolve().parents[2]
KINDS = {"owner-file": lease.OwnerFileLock}
if lease.fcntl is not None:
    KINDS["flock"] = lease.FlockLock


@pytest.fixture(params=sorted(KINDS))
def kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test runs with each lock this machine has (the owner file everywhere)."""
    monkeypatch.setattr(lease, "LOCK_KIND", KINDS[request.param])
    return str(request.param)


HOLD = """
import sys, time
from pathlib import Path
from cdc_kit.router import lease
from cdc_kit.router.lease import GroupLease
held = GroupLease(Path(sys.argv[1]), "g", hands_over=False)
held.acquire()
print(lease.LOCK_KIND.__name__, flush=True)
time.sleep(120)
"""


@contextmanager
def held_elsewhere(home: Path, kind: str) -> Iterator[subprocess.Popen[str]]:
    """Another process holding group "g" (with fcntl blocked for the owner file)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    if kind == "owner-file":
        env = blocked_env(["fcntl"], env)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(home)], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        expected = "OwnerFileLock" if kind == "owner-file" else "FlockLock"
        assert holder.stdout is not None and holder.stdout.readline().strip() == expected
        yield holder
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()


def test_one_holder_at_a_time_and_free_again_after_release(tmp_path: Path, kind: str) -> None:
    first, second = GroupLease(tmp_path, "g"), GroupLease(tmp_path, "g", hands_over=False)
    first.acquire()
    assert lease_holder(tmp_path, "g")["pid"] == os.getpid()
    with pytest.raises(FixableError, match="did not hand it over"):
        second.acquire(wait=0.2)
    first.release()
    assert lease_holder(tmp_path, "g") is None
    second.acquire(wait=0.2)
    with pytest.raises(FixableError, match="keeps its group"):
        first.acquire(wait=0.2)
    second.release()


def test_a_holder_killed_like_an_interrupted_kernel_frees_the_group(tmp_path: Path, kind: str):
    mine = GroupLease(tmp_path, "g")
    with held_elsewhere(tmp_path, kind) as other:
        assert lease_holder(tmp_path, "g")["pid"] == other.pid
        with pytest.raises(FixableError) as refused:
            mine.acquire(wait=0.2)
        assert f"pid {other.pid}" in str(refused.value) and "keeps its group" in str(refused.value)
    assert lease_holder(tmp_path, "g") is None  # nothing was released by hand
    mine.acquire(wait=0.2)
    mine.release()


def test_a_router_that_asks_gets_the_group_when_the_holder_hands_it_over(tmp_path: Path, kind):
    holder, asker = GroupLease(tmp_path, "g"), GroupLease(tmp_path, "g")
    holder.acquire()
    waiting = threading.Thread(target=asker.acquire, kwargs={"wait": 5.0})
    waiting.start()
    deadline = time.monotonic() + 5
    while holder.handover_requested() is None:
        assert time.monotonic() < deadline, "no handover request"
        time.sleep(0.02)
    assert holder.handover_requested()["pid"] == os.getpid()
    holder.release()
    waiting.join(5)
    assert asker.held and not asker.request_path.exists()
    asker.release()


def test_the_token_tells_whether_another_router_held_the_group_meanwhile(tmp_path, kind):
    mine, other = GroupLease(tmp_path, "g"), GroupLease(tmp_path, "g")
    mine.acquire()
    mine.release()
    mine.acquire()
    assert mine.undisturbed
    mine.release()
    other.acquire()
    other.release()
    mine.acquire()
    assert not mine.undisturbed
    mine.release()


def test_a_lease_dropped_without_release_frees_the_group(tmp_path: Path, kind: str) -> None:
    dropped = GroupLease(tmp_path, "g")
    dropped.acquire()
    del dropped
    gc.collect()
    successor = GroupLease(tmp_path, "g")
    successor.acquire(wait=0.2)
    successor.release()


def test_an_owner_file_naming_a_reused_pid_is_taken_over(tmp_path: Path) -> None:
    """A pid that lives again in another process (its start time differs) is not the owner."""
    lease.lock_path(tmp_path, "g").parent.mkdir(parents=True)
    owner_path = lease.lock_path(tmp_path, "g").with_suffix(".owner")
    someone = psutil.Process(os.getppid())
    owner_path.write_text(json.dumps({"pid": someone.pid, "started": someone.create_time() - 60}))
    taker = GroupLease(tmp_path, "g")
    taker._lock = lease.OwnerFileLock(taker.path)
    taker.acquire(wait=0.2)
    assert json.loads(owner_path.read_text())["pid"] == os.getpid()
    taker.release()
    assert not owner_path.exists()
    assert [p.name for p in owner_path.parent.iterdir() if ".owner." in p.name] == []


def test_an_empty_owner_file_counts_as_held_until_it_is_clearly_abandoned(tmp_path: Path):
    lease.lock_path(tmp_path, "g").parent.mkdir(parents=True)
    owner_path = lease.lock_path(tmp_path, "g").with_suffix(".owner")
    owner_path.write_text("")  # its writer is between create and write, or died there
    taker = GroupLease(tmp_path, "g")
    taker._lock = lease.OwnerFileLock(taker.path)
    assert not taker._lock.try_acquire()
    old = time.time() - lease.UNWRITTEN_OWNER_S - 1
    os.utime(owner_path, (old, old))
    assert taker._lock.try_acquire()
    taker._lock.release()
