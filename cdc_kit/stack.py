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
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from cdc_kit.config import Settings, get_settings
from cdc_kit.errors import CdcKitError
from cdc_kit.services.broker import BrokerService
from cdc_kit.services.postgres import PostgresService
from cdc_kit.services.process import ProcessService, ServiceStatus, tcp_answers
from cdc_kit.services.warehouse import WarehouseService

#: A file that marks a folder as a cdc-kit state folder, so `reset` never deletes anything else.
HOME_MARKER = ".cdc_kit_home"

#: Kafka client settings that survive a broker restart quickly (FIELD_NOTES, measured).
PRODUCER_DEFAULTS: dict[str, Any] = {
    "acks": "all",
    "enable_idempotence": False,  # an idempotent producer breaks for good on a broker restart
    "max_in_flight_requests_per_connection": 1,  # keeps order without idempotence
    "linger_ms": 5,
    "batch_size": 262144,
    "reconnect_backoff_max_ms": 1000,
    "request_timeout_ms": 10000,
    "allow_auto_create_topics": False,
}
CONSUMER_DEFAULTS: dict[str, Any] = {
    "auto_offset_reset": "earliest",
    "enable_auto_commit": False,
    "session_timeout_ms": 6000,  # joining a group takes ~3 s instead of ~23 s
    "heartbeat_interval_ms": 1000,
    # The broker holds an empty fetch this long: 500 ms (default) cost ~250 ms per change
    # (measured); 20 ms gives ~12 ms commit -> consumer at ~50 idle fetches/s on loopback.
    "fetch_max_wait_ms": 20,
    "reconnect_backoff_max_ms": 1000,
    "request_timeout_ms": 10000,
    "allow_auto_create_topics": False,
}


def prepare_home(home: Path) -> None:
    """Create the state folder (and its marker), or explain in one line why it cannot be."""
    try:
        home.mkdir(parents=True, exist_ok=True)
        for sub in ("run", "logs"):
            (home / sub).mkdir(exist_ok=True)
        (home / HOME_MARKER).touch()
    except OSError as exc:
        raise CdcKitError(
            f"cannot write the state folder {home}: {exc.strerror or exc}; "
            f"set CDC_KIT_HOME to a writable folder"
        ) from exc


@dataclass
class Stack:
    """The running services and factories for clients that talk to them."""

    settings: Settings

    # ---- services --------------------------------------------------------------------
    @cached_property
    def services(self) -> list[ProcessService]:
        """Embedded services in start order (capture needs the other three)."""
        services: list[ProcessService] = [
            PostgresService(self.settings),
            BrokerService(self.settings),
            WarehouseService(self.settings),
        ]
        try:
            from cdc_kit.services.capture import CaptureService
        except ImportError:  # capture is optional for the foundation lessons
            return services
        return [*services, CaptureService(self.settings)]

    def service(self, name: str) -> ProcessService:
        for service in self.services:
            if service.name == name:
                return service
        raise KeyError(name)

    def up(self, only: list[str] | None = None) -> dict[str, bool]:
        """Start every embedded service that is not healthy yet. Returns name -> started now."""
        if self.settings.mode == "docker":
            self.check_docker()
            return {}
        prepare_home(self.settings.home)
        started: dict[str, bool] = {}
        for service in self.services:
            if only is None or service.name in only:
                started[service.name] = service.ensure_started()
        return started

    def down(self) -> dict[str, bool]:
        """Stop the services we started (reverse order). Returns name -> was stopped."""
        if self.settings.mode == "docker":
            return {}
        return {service.name: service.stop() for service in reversed(self.services)}

    def reset(self) -> None:
        """Stop everything and delete the state folder (databases, logs)."""
        home = self.settings.home
        if home.exists() and not (home / HOME_MARKER).exists():
            raise CdcKitError(f"refusing to delete {home}: it is not a cdc-kit state folder")
        self.down()
        shutil.rmtree(home, ignore_errors=True)

    def status(self) -> list[ServiceStatus]:
        if self.settings.mode == "docker":
            return self._docker_status()
        return [service.status() for service in self.services]

    # ---- docker mode -------------------------------------------------------------------
    def _docker_status(self) -> list[ServiceStatus]:
        s = self.settings
        checks = [
            ("postgres", s.pg_host, int(s.pg_port or 0)),
            ("broker", s.kafka_host, int(s.kafka_port or 0)),
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
            raise CdcKitError(
                f"docker mode: not reachable: {names}; start those services, or use the "
                "embedded stack (CDC_KIT_MODE=embedded)"
            )

    # ---- clients -------------------------------------------------------------------
    def pg_engine(self, **kwargs: Any) -> Any:
        """A SQLAlchemy engine (what SQLModel sessions use) for the lesson database.

        `pool_pre_ping` checks a pooled connection before use, so a restarted PostgreSQL
        does not hand a notebook a dead connection.
        """
        from sqlmodel import create_engine

        return create_engine(self.settings.pg_sqlalchemy_url, **{"pool_pre_ping": True, **kwargs})

    def pg_connection(self, **kwargs: Any) -> Any:
        """A plain psycopg2 connection, for replication queries and raw SQL."""
        import psycopg2

        return psycopg2.connect(str(self.settings.pg_dsn), **kwargs)

    def kafka_producer(self, **kwargs: Any) -> Any:
        """A kafka-python producer with restart-safe settings (override any with kwargs)."""
        from kafka import KafkaProducer

        options = {**PRODUCER_DEFAULTS, **kwargs}
        return KafkaProducer(bootstrap_servers=self.settings.kafka_bootstrap, **options)

    def kafka_consumer(self, *topics: str, **kwargs: Any) -> Any:
        """A kafka-python consumer; pass topics to subscribe, or call `.assign()` yourself."""
        from kafka import KafkaConsumer

        options = {**CONSUMER_DEFAULTS, **kwargs}
        return KafkaConsumer(*topics, bootstrap_servers=self.settings.kafka_bootstrap, **options)

    def clickhouse(self, **kwargs: Any) -> Any:
        """A clickhouse-connect client for the warehouse database (`local`).

        Without a server session the client may be shared by threads (a router thread and
        the notebook that watches it); the kit uses no session state (temporary tables...).
        """
        import clickhouse_connect

        options: dict[str, Any] = {
            "autogenerate_session_id": False,
            "host": self.settings.clickhouse_host,
            "port": self.settings.clickhouse_port,
            "username": self.settings.clickhouse_user,
            "password": self.settings.clickhouse_password,
            "database": self.settings.clickhouse_database,
        }
        options.update(kwargs)
        return clickhouse_connect.get_client(**options)


def get_stack(settings: Settings | None = None) -> Stack:
    """A Stack for these settings (default: from the environment), without starting anything."""
    return Stack(settings or get_settings())


def ensure_running(settings: Settings | None = None, timeout: float = 120.0) -> Stack:
    """Start (embedded) or check (docker) the stack and return it, ready for clients."""
    stack = get_stack(settings)
    started = time.monotonic()
    stack.up()
    if time.monotonic() - started > timeout:
        raise CdcKitError(f"the stack took longer than {timeout:.0f} s to start")
    return stack
