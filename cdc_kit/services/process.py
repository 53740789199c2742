"""Background processes with pid files, logs and health checks: the shared machinery of `up`.

Every embedded service (PostgreSQL, broker, warehouse, capture) is a long-running program that
must outlive the command or notebook that started it. We start it in its own session, write
`<home>/run/<name>.json` (pid + the process's start time, so a reused pid is never mistaken for
ours), send its output to `<home>/logs/<name>.log`, and poll a health check until it answers.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from cdc_kit.config import Settings
from cdc_kit.errors import FixableError


class PortInUse(FixableError):
    """A service's port is taken by another program."""


#: The signal that cannot be ignored; Windows has no SIGKILL (its SIGTERM terminates at once).
KILL_SIGNAL: int = getattr(signal, "SIGKILL", signal.SIGTERM)


def is_root() -> bool:
    """Running as root on a POSIX system (Windows has no effective user id)."""
    return hasattr(os, "geteuid") and os.geteuid() == 0


#: Popen objects of children started by this Python process, so they can be reaped (no zombies).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


@dataclass
class ServiceStatus:
    """What `status` prints for one service."""

    name: str
    address: str
    pid: int | None
    running: bool
    healthy: bool
    detail: str = ""

    @property
    def state(self) -> str:
        if self.healthy:
            return "healthy"
        return "unhealthy" if self.running else "stopped"


def port_is_free(host: str, port: int) -> bool:
    """True if nothing listens on host:port (we try to bind it ourselves)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """Ports nothing listens on right now (the OS picks them; all held until all are chosen)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind((host, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def tcp_answers(host: str, port: int, timeout: float = 0.5) -> bool:
    """True if a TCP connection to host:port succeeds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def describe_port_owner(port: int) -> str:
    """Best-effort 'pid 123 (postgres)' of whoever listens on a port, for error messages."""
    try:
        for conn in psutil.net_connections(kind="tcp"):
            listening = conn.laddr and conn.status == psutil.CONN_LISTEN
            if listening and conn.laddr.port == port and conn.pid:
                return f"pid {conn.pid} ({psutil.Process(conn.pid).name()})"
    except (psutil.Error, OSError):
        pass
    return "another program"


def wait_until(check: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll `check` until it returns True or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def _reap(pid: int) -> None:
    """Collect the exit status of a child we started, so it does not linger as a zombie."""
    child = _CHILDREN.get(pid)
    if child is not None and child.poll() is not None:
        _CHILDREN.pop(pid, None)


def process_alive(pid: int, create_time: float | None = None) -> bool:
    """True if `pid` runs and, when given, was started at `create_time` (not a reused pid)."""
    _reap(pid)
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return create_time is None or abs(proc.create_time() - create_time) <= 1.0
    except psutil.Error:
        return False


class ProcessService(ABC):
    """One background service of the embedded stack.

    Subclasses say how to prepare (e.g. initdb), which command to run, how to check health and
    what to do once healthy (e.g. create topics). This class does the rest: pid file, log file,
    stale-state recovery, port checks, start and stop.
    """

    name: str = "service"
    #: Signal that asks the program for a quick, clean shutdown.
    stop_signal: int = signal.SIGTERM
    start_timeout: float = 30.0
    stop_timeout: float = 15.0

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.home = settings.home

    # ---- what a subclass describes -------------------------------------------------
    @property
    @abstractmethod
    def address(self) -> str:
        """Where clients reach the service, for status output."""

    @abstractmethod
    def command(self) -> list[str]:
        """The program and arguments that run the service in the foreground."""

    @abstractmethod
    def healthy(self) -> bool:
        """True when the service answers like it should."""

    def ports(self) -> list[tuple[str, int, str]]:
        """(host, port, env var that changes it) the service will listen on."""
        return []

    def prepare(self) -> None:
        """One-time set-up before the first start (folders, initdb...)."""

    def after_start(self) -> None:
        """Work to do once the service is healthy (create a database, topics...)."""

    def spawn_kwargs(self) -> dict[str, Any]:
        """Extra keyword arguments for subprocess.Popen (e.g. run as another user)."""
        return {}

    def extra_state(self) -> dict[str, Any]:
        """Facts to remember in the pid file besides the pid (e.g. the broker's cluster id)."""
        return {}

    # ---- files ----------------------------------------------------------------------
    @property
    def state_file(self) -> Path:
        return self.home / "run" / f"{self.name}.json"

    @property
    def log_file(self) -> Path:
        return self.home / "logs" / f"{self.name}.log"

    def read_state(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return None

    def _write_state(self, pid: int) -> None:
        state = {
            "pid": pid,
            "create_time": psutil.Process(pid).create_time(),
            "command": self.command()[:1],
            "started_at": time.time(),
            **self.extra_state(),
        }
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(self.state_file)

    # ---- lifecycle ------------------------------------------------------------------
    def running_pid(self) -> int | None:
        """The pid from our state file if that very process still runs, else None."""
        state = self.read_state()
        if not state:
            return None
        pid = int(state["pid"])
        return pid if process_alive(pid, state.get("create_time")) else None

    def status(self) -> ServiceStatus:
        pid = self.running_pid()
        stale = pid is None and self.state_file.exists()
        healthy = pid is not None and self.healthy()
        detail = "stale pid file (process gone)" if stale else ""
        return ServiceStatus(self.name, self.address, pid, pid is not None, healthy, detail)

    def ensure_started(self, deadline: float | None = None) -> bool:
        """Start the service unless ours already runs and is healthy. True if it was started.

        `deadline` (time.monotonic()) bounds the wait for health; default: `start_timeout`.
        """
        pid = self.running_pid()
        if pid is not None:
            if wait_until(self.healthy, timeout=self._time_left(deadline, 5.0)):
                return False
            # Ours, but not answering: replace it rather than leave a half-dead service.
            self.stop()
        self.state_file.unlink(missing_ok=True)
        self._check_ports()
        self.prepare()
        self._spawn(self._time_left(deadline, self.start_timeout))
        return True

    @staticmethod
    def _time_left(deadline: float | None, at_most: float) -> float:
        if deadline is None:
            return at_most
        return max(0.0, min(at_most, deadline - time.monotonic()))

    def _check_ports(self) -> None:
        for host, port, env_var in self.ports():
            if not port_is_free(host, port):
                owner = describe_port_owner(port)
                raise PortInUse(
                    f"{self.name}: port {port} on {host} is already in use by {owner}; "
                    f"stop it or choose another port with {env_var}=<port>"
                )

    def _spawn(self, timeout: float) -> None:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as log:
            log.write(f"\n--- starting {self.name} at {time.ctime()} ---\n".encode())
            log.flush()
            try:
                child = subprocess.Popen(
                    self.command(),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    **self.spawn_kwargs(),
                )
            except OSError as exc:
                raise FixableError(f"{self.name}: cannot start {self.command()[0]}: {exc}") from exc
        _CHILDREN[child.pid] = child
        self._write_state(child.pid)
        started = wait_until(lambda: child.poll() is None and self.healthy(), timeout=timeout)
        if not started:
            code = child.poll()
            self.stop()
            reason = f"exited with code {code}" if code is not None else "did not become healthy"
            raise FixableError(
                f"{self.name} {reason} within {timeout:.0f} s; "
                f"last log lines: {self.log_tail(3)!r} (full log: {self.log_file})"
            )
        self.after_start()

    def stop(self) -> bool:
        """Stop the service if it is ours and running. True if something was stopped."""
        pid = self.running_pid()
        self.state_file.unlink(missing_ok=True)
        if pid is None:
            return False
        try:
            os.kill(pid, self.stop_signal)
        except ProcessLookupError:
            return True
        if not wait_until(lambda: not process_alive(pid), timeout=self.stop_timeout):
            with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
                os.kill(pid, KILL_SIGNAL)
            wait_until(lambda: not process_alive(pid), timeout=5.0)
        return True

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return ""
        return " | ".join(line for line in text.strip().splitlines()[-lines:])
