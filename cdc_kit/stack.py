"""Start, stop and inspect the whole stack, and hand out ready-made clients.

In a notebook one line is enough::

    stack = ensure_running()
    engine = stack.pg_engine()          # SQLModel / SQLAlchemy engine for PostgreSQL
    producer = stack.kafka_producer()   # kafka-python producer for the change topic
    ch = stack.clickhouse()             # clickhouse-connect client, database `local`

In embedded mode `ensure_running()` starts what is not running yet (PostgreSQL, the broker,
ClickHouse and the capture service); in docker mode it only checks that the external services
answer, because whoever started them (containers, a team's servers) owns them.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import psycopg2.extensions

from cdc_kit import clients
from cdc_kit.config import Settings, get_settings
from cdc_kit.errors import FixableError
from cdc_kit.services.broker import BrokerService
from cdc_kit.services.capture_process import CaptureService
from cdc_kit.services.clickhouse import ClickHouseService
from cdc_kit.services.embedded import require_embedded
from cdc_kit.services.home import ensure_lab, is_state_folder, prepare_home
from cdc_kit.services.postgres import PostgresService
from cdc_kit.services.process import (
    PortInUse,
    ProcessService,
    ServiceStatus,
    free_ports,
    tcp_answers,
)
from cdc_kit.tls import split_address


@dataclass
class Stack:
    """The running services and factories for clients that talk to them."""

    settings: Settings

    # ---- services --------------------------------------------------------------------
    @cached_property
    def services(self) -> list[ProcessService]:
        """Embedded services in start order (capture needs the other three)."""
        return [
            PostgresService(self.settings),
            BrokerService(self.settings),
            ClickHouseService(self.settings),
            CaptureService(self.settings),
        ]

    def service(self, name: str) -> ProcessService:
        for service in self.services:
            if service.name == name:
                return service
        raise KeyError(name)

    def up(self, only: list[str] | None = None, timeout: float | None = None) -> dict[str, bool]:
        """Start every embedded service that is not healthy yet. Returns name -> started now.

        `timeout`: seconds for the whole start, shared by the services (default: each its own).
        """
        if self.settings.mode == "docker":
            self.check_docker()
            return {}
        require_embedded(only)
        prepare_home(self.settings.home)
        if ensure_lab(self.settings):
            self._reload_settings()
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            return self._start(only, deadline)
        except PortInUse:
            if self.settings.ports != "auto":
                raise
            # Another lab (or program) took one of our ports while this lab was down.
            self.down()
            ensure_lab(self.settings, new_ports=True)
            self._reload_settings()
            return self._start(only, deadline)

    def _start(self, only: list[str] | None, deadline: float | None) -> dict[str, bool]:
        started: dict[str, bool] = {}
        for service in self.services:
            if only is None or service.name in only:
                started[service.name] = service.ensure_started(deadline)
        return started

    def _reload_settings(self) -> None:
        """Take up what `up` wrote in the lab file (credentials, ports): services follow."""
        self.settings = self.settings.reloaded()
        self.__dict__.pop("services", None)

    def down(self) -> dict[str, bool]:
        """Stop the services we started (reverse order). Returns name -> was stopped."""
        if self.settings.mode == "docker":
            return {}
        return {service.name: service.stop() for service in reversed(self.services)}

    def reset(self) -> None:
        """Stop everything and delete the state folder (databases, logs)."""
        home = self.settings.home
        if home.exists() and not is_state_folder(home):
            raise FixableError(f"refusing to delete {home}: it is not a cdc-kit state folder")
        self.down()
        shutil.rmtree(home, ignore_errors=True)

    def status(self) -> list[ServiceStatus]:
        if self.settings.mode == "docker":
            return self._docker_status()
        return [service.status() for service in self.services]

    # ---- docker mode -------------------------------------------------------------------
    def _docker_status(self) -> list[ServiceStatus]:
        s = self.settings
        # Where the clients really go: the DSN and the bootstrap list may name other servers
        # than the host/port settings (a managed PostgreSQL, a cloud cluster).
        pg = psycopg2.extensions.parse_dsn(str(s.pg_dsn))
        if pg.get("host", "").startswith("/"):  # a socket folder: check the settings' address
            pg = {}
        pg_host = pg.get("host", s.pg_host).split(",")[0]
        pg_port = int(str(pg.get("port", s.pg_port)).split(",")[0])
        kafka_host, kafka_port = split_address(str(s.kafka_bootstrap).split(",")[0], 9092)
        checks = [
            ("postgres", pg_host, pg_port),
            ("broker", kafka_host, kafka_port),
            ("clickhouse", s.clickhouse_host, int(s.clickhouse_port or 0)),
        ]
        return [
            ServiceStatus(name, f"{host}:{port}", None, ok, ok, "external service")
            for name, host, port in checks
            for ok in [tcp_answers(host, port, timeout=1.0)]
        ]

    def check_docker(self) -> None:
        down = [st for st in self._docker_status() if not st.healthy]
        if down:
            names = ", ".join(f"{st.name} ({st.address})" for st in down)
            raise FixableError(
                f"docker mode: not reachable: {names}; start those services, or use the "
                "embedded stack (CDC_KIT_MODE=embedded)"
            )

    # ---- clients (see cdc_kit.clients) -----------------------------------------------
    def pg_engine(self, **kwargs: Any) -> Any:
        """A SQLAlchemy engine (what SQLModel sessions use) for the lesson database."""
        return clients.pg_engine(self.settings, **kwargs)

    def pg_connection(self, **kwargs: Any) -> Any:
        """A plain psycopg2 connection, for replication queries and raw SQL."""
        return clients.pg_connection(self.settings, **kwargs)

    def kafka_producer(self, **kwargs: Any) -> Any:
        """A kafka-python producer with restart-safe settings (override any with kwargs)."""
        return clients.kafka_producer(self.settings, **kwargs)

    def kafka_consumer(self, *topics: str, **kwargs: Any) -> Any:
        """A kafka-python consumer; pass topics to subscribe, or call `.assign()` yourself."""
        return clients.kafka_consumer(self.settings, *topics, **kwargs)

    def clickhouse(self, **kwargs: Any) -> Any:
        """A clickhouse-connect client for the warehouse database (`local`)."""
        return clients.clickhouse(self.settings, **kwargs)


def get_stack(settings: Settings | None = None) -> Stack:
    """A Stack for these settings (default: from the environment), without starting anything."""
    return Stack(settings or get_settings())


def ensure_running(settings: Settings | None = None, timeout: float = 120.0) -> Stack:
    """Start (embedded) or check (docker) the stack and return it, ready for clients.

    Raises FixableError, naming the service and its log, if it is not ready within `timeout`.
    """
    stack = get_stack(settings)
    stack.up(timeout=timeout)
    return stack


@contextmanager
def scratch_stack(only: list[str] | None = None, **overrides: Any) -> Iterator[Stack]:
    """A throwaway embedded stack: free loopback ports, a temporary state folder, removed after.

    For benchmarks, scripts and tests that need a stack of their own in this process
    (tests/conftest.py's make_test_env gives such a stack's CDC_KIT_* variables instead, where a
    test hands them on, e.g. to the CLI). Settings not in `overrides` come from the environment
    as usual, the mode too: pass mode="embedded" where CDC_KIT_MODE may say docker. A child
    process (a notebook kernel) sees exactly this stack with
    `env=config.settings_env(stack.settings)`. The folder is made reachable for the unprivileged
    PostgreSQL user when running as root (mkdtemp creates it private: we open only what we made).
    """
    root = Path(tempfile.mkdtemp(prefix="cdc_kit_scratch_"))
    root.chmod(0o755)
    pg, kafka, clickhouse = free_ports(3)
    settings = Settings(
        **{
            "home": root / "home",
            "pg_port": pg,
            "kafka_port": kafka,
            "clickhouse_port": clickhouse,
            **overrides,
        }
    )
    stack = Stack(settings)
    try:
        stack.up(only=only)
        yield stack
    finally:
        stack.down()
        shutil.rmtree(root, ignore_errors=True)
