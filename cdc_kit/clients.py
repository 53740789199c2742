"""Clients for PostgreSQL, the Kafka broker and ClickHouse, made from `Settings` alone.

Capture, the router and the stack all get their clients here, so one place decides the
settings that matter (restart-safe Kafka options, a ClickHouse client without a server
session) and no component needs the `Stack` to talk to a service.
"""

from __future__ import annotations

import contextlib
from typing import Any

import psycopg2

from cdc_kit.config import Settings
from cdc_kit.errors import TlsError, first_line
from cdc_kit.tls import handshake_problem, split_address


class PgTlsError(TlsError, psycopg2.OperationalError):
    """PostgreSQL refused TLS: one line for the CLI, still a psycopg2 error for retry loops."""


#: kafka-python producer settings that survive a restart of the memory-only broker quickly.
PRODUCER_DEFAULTS: dict[str, Any] = {
    "acks": "all",
    # An idempotent producer breaks for good (UnknownProducerIdError) when the broker restarts.
    "enable_idempotence": False,
    "max_in_flight_requests_per_connection": 1,  # keeps order without idempotence
    "linger_ms": 5,
    "batch_size": 262144,
    "reconnect_backoff_max_ms": 1000,
    "request_timeout_ms": 10000,
    # A client that creates a topic gets the broker's default of 4 partitions: order is lost.
    "allow_auto_create_topics": False,
}
#: kafka-python consumer settings (offsets are committed by hand, after the write).
CONSUMER_DEFAULTS: dict[str, Any] = {
    "auto_offset_reset": "earliest",
    "enable_auto_commit": False,
    "session_timeout_ms": 6000,  # joining a group takes ~3 s instead of ~23 s
    "heartbeat_interval_ms": 1000,
    # The broker holds an empty fetch this long: 500 ms (the default) cost ~250 ms per change;
    # 20 ms gives ~12 ms from commit to consumer, at ~50 idle fetches/s on loopback.
    "fetch_max_wait_ms": 20,
    "reconnect_backoff_max_ms": 1000,
    "request_timeout_ms": 10000,
    "allow_auto_create_topics": False,
}


def pg_ssl_options(settings: Settings) -> dict[str, str]:
    """libpq's TLS parameters from the settings (none set: libpq's defaults, as before)."""
    options: dict[str, str] = {}
    if settings.pg_sslmode:
        options["sslmode"] = settings.pg_sslmode
    if settings.pg_sslrootcert:
        options["sslrootcert"] = str(settings.pg_sslrootcert)
    return options


def _is_tls_failure(message: str) -> bool:
    return any(word in message for word in ("SSL", "certificate", "sslmode"))


def pg_connection(settings: Settings, **kwargs: Any) -> Any:
    """A plain psycopg2 connection (raw SQL, replication queries), with the TLS settings.

    A refused certificate becomes one line (PgTlsError); other failures stay psycopg2's own.
    """
    try:
        return psycopg2.connect(str(settings.pg_dsn), **{**pg_ssl_options(settings), **kwargs})
    except psycopg2.OperationalError as exc:
        if not _is_tls_failure(str(exc)):
            raise
        raise PgTlsError(
            f"PostgreSQL TLS: {first_line(exc)} (CDC_KIT_PG_SSLMODE={settings.pg_sslmode}, "
            f"CDC_KIT_PG_SSLROOTCERT={settings.pg_sslrootcert})"
        ) from exc


def pg_engine(settings: Settings, **kwargs: Any) -> Any:
    """A SQLAlchemy engine, what SQLModel sessions use, with the TLS settings.

    `pool_pre_ping` checks a pooled connection before use, so a restarted PostgreSQL does not
    hand out a dead connection.
    """
    from sqlmodel import create_engine

    connect_args = {**pg_ssl_options(settings), **kwargs.pop("connect_args", {})}
    return create_engine(
        settings.pg_sqlalchemy_url,
        **{"pool_pre_ping": True, "connect_args": connect_args, **kwargs},
    )


def kafka_security(settings: Settings) -> dict[str, Any]:
    """kafka-python's TLS/SASL options (nothing for PLAINTEXT, its default)."""
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return {}
    options: dict[str, Any] = {"security_protocol": protocol}
    if protocol.startswith("SASL_"):
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        # kafka-python names them "plain" but uses them for SCRAM as well.
        options["sasl_plain_username"] = settings.kafka_sasl_username
        options["sasl_plain_password"] = settings.kafka_sasl_password.get_secret_value()
    if protocol.endswith("SSL") and settings.kafka_ssl_cafile:
        options["ssl_cafile"] = str(settings.kafka_ssl_cafile)
    return options


def rdkafka_security(settings: Settings) -> dict[str, Any]:
    """librdkafka's TLS/SASL properties (nothing for PLAINTEXT, its default)."""
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return {}
    options: dict[str, Any] = {"security.protocol": protocol.lower()}
    if protocol.startswith("SASL_"):
        options["sasl.mechanisms"] = settings.kafka_sasl_mechanism
        options["sasl.username"] = settings.kafka_sasl_username
        options["sasl.password"] = settings.kafka_sasl_password.get_secret_value()
    if protocol.endswith("SSL") and settings.kafka_ssl_cafile:
        options["ssl.ca.location"] = str(settings.kafka_ssl_cafile)
    return options


def kafka_tls_problem(settings: Settings) -> str | None:
    """Why TLS to the first bootstrap broker fails (one line), or None (no TLS, or it works)."""
    if not settings.kafka_security_protocol.endswith("SSL"):
        return None
    first = str(settings.kafka_bootstrap).split(",")[0]
    host, port = split_address(first, 9092)
    return handshake_problem(host, port, settings.kafka_ssl_cafile)


def _kafka_python(settings: Settings, make: Any, *args: Any, **options: Any) -> Any:
    """Build a kafka-python client; a failure that a TLS handshake explains becomes TlsError."""
    from kafka.errors import KafkaError

    try:
        return make(*args, **options)
    except KafkaError as exc:
        problem = kafka_tls_problem(settings)
        if problem is None:
            raise
        raise TlsError(f"broker: {problem} (CDC_KIT_KAFKA_SSL_CAFILE)") from exc


def kafka_producer(settings: Settings, **kwargs: Any) -> Any:
    """A kafka-python producer with restart-safe settings (override any with kwargs)."""
    from kafka import KafkaProducer

    return _kafka_python(
        settings,
        KafkaProducer,
        bootstrap_servers=settings.kafka_bootstrap,
        **{**PRODUCER_DEFAULTS, **kafka_security(settings), **kwargs},
    )


def kafka_consumer(settings: Settings, *topics: str, **kwargs: Any) -> Any:
    """A kafka-python consumer; pass topics to subscribe, or call `.assign()` yourself."""
    from kafka import KafkaConsumer

    return _kafka_python(
        settings,
        KafkaConsumer,
        *topics,
        bootstrap_servers=settings.kafka_bootstrap,
        **{**CONSUMER_DEFAULTS, **kafka_security(settings), **kwargs},
    )


def kafka_admin(settings: Settings, **kwargs: Any) -> Any:
    """A kafka-python admin client (topics, the cluster id).

    When the broker cannot be reached, kafka-python 3.0's constructor raises and leaves its
    network thread and sockets open (about 5 descriptors per try, measured): a service that
    retries every few seconds would pile them up. Those are closed here before re-raising.
    """
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient.__new__(KafkaAdminClient)
    try:
        admin.__init__(
            bootstrap_servers=settings.kafka_bootstrap,
            **{
                "request_timeout_ms": 5000,
                "bootstrap_timeout_ms": 5000,
                **kafka_security(settings),
                **kwargs,
            },
        )
    except BaseException as exc:
        _close_half_made(admin)
        problem = kafka_tls_problem(settings) if isinstance(exc, Exception) else None
        if problem is None:
            raise
        raise TlsError(f"broker: {problem} (CDC_KIT_KAFKA_SSL_CAFILE)") from exc
    return admin


def _close_half_made(admin: Any) -> None:
    """Close what a failed KafkaAdminClient constructor opened (its close() skips them)."""
    for part, close in (("_client", "close"), ("_net", "stop"), ("_metrics", "close")):
        if hasattr(admin, part):
            # Best effort: the constructor's own error is what the caller must see.
            with contextlib.suppress(Exception):
                getattr(getattr(admin, part), close)()


def cluster_id(admin: Any) -> str:
    """The broker's cluster id. The embedded broker gets a new one at every start, so a
    changed id means its topics, messages and committed offsets are gone."""
    return str(admin.describe_cluster().get("cluster_id"))


def topic_partitions(admin: Any, topic: str) -> list[int] | None:
    """The partition numbers of `topic`, or None when the broker does not have it."""
    for described in admin.describe_topics([topic]):
        if described.get("name") == topic and not described.get("error_code"):
            return sorted(p["partition_index"] for p in described.get("partitions", []))
    return None


def clickhouse(settings: Settings, **kwargs: Any) -> Any:
    """A clickhouse-connect client for the warehouse database (`local` by default).

    Without a server session one client may be shared by threads (a router thread and the
    notebook that watches it); clickhouse-connect refuses concurrent queries in one session.
    HTTPS with `clickhouse_secure`; a refused certificate becomes one line (TlsError).
    """
    import clickhouse_connect
    from clickhouse_connect.driver.exceptions import OperationalError

    options: dict[str, Any] = {
        "autogenerate_session_id": False,
        "host": settings.clickhouse_host,
        "port": settings.clickhouse_port,
        "username": settings.clickhouse_user,
        "password": settings.clickhouse_password,
        "database": settings.clickhouse_database,
        "secure": settings.clickhouse_secure,
        "verify": settings.clickhouse_verify,
        **({"ca_cert": str(settings.clickhouse_ca_file)} if settings.clickhouse_ca_file else {}),
        **kwargs,
    }
    try:
        return clickhouse_connect.get_client(**options)
    except OperationalError as exc:
        if not options["secure"]:
            raise
        problem = handshake_problem(
            str(options["host"]), int(options["port"]), options.get("ca_cert"), options["verify"]
        )
        if problem is None:
            raise
        raise TlsError(f"ClickHouse: {problem} (CDC_KIT_CLICKHOUSE_CA_FILE)") from exc


# ---- librdkafka (confluent-kafka): the hot paths of capture and router --------------------------
# Learner-facing code uses kafka-python above; capture and the router move every event, so
# they use librdkafka, measured ~20x faster here. Same protocol, same topics.

#: Producer settings: no idempotence and one request in flight (order without idempotence,
#: and no producer state to lose when the memory-only broker restarts), acks from all.
RDKAFKA_PRODUCER_DEFAULTS: dict[str, Any] = {
    "enable.idempotence": False,
    "acks": "all",
    "max.in.flight.requests.per.connection": 1,
    "linger.ms": 5,
    "batch.num.messages": 10000,
    "queue.buffering.max.messages": 500000,
    "message.timeout.ms": 30000,
    "reconnect.backoff.max.ms": 1000,
    "message.max.bytes": 8 * 2**20,
    # Never let a metadata request create a topic: the broker would give it 4 partitions.
    "allow.auto.create.topics": False,
    "socket.nagle.disable": True,  # small requests leave at once (no ~40 ms Nagle delay)
    "log_level": 3,  # errors only: a restarting broker is expected, not news
}

#: Consumer settings: offsets committed by hand after the write; a short fetch wait, because
#: the broker holds an empty fetch that long (freshness); a bounded prefetch queue (memory).
RDKAFKA_CONSUMER_DEFAULTS: dict[str, Any] = {
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
    "auto.offset.reset": "earliest",
    "enable.partition.eof": False,
    "fetch.wait.max.ms": 20,
    "queued.max.messages.kbytes": 16384,
    "allow.auto.create.topics": False,
    "reconnect.backoff.max.ms": 1000,
    "socket.nagle.disable": True,
    "log_level": 3,
}


def rdkafka_producer(settings: Settings, **overrides: Any) -> Any:
    """A confluent-kafka (librdkafka) producer with the settings above."""
    from confluent_kafka import Producer

    return Producer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            **RDKAFKA_PRODUCER_DEFAULTS,
            **rdkafka_security(settings),
            **overrides,
        }
    )


def rdkafka_consumer(settings: Settings, group: str, **overrides: Any) -> Any:
    """A confluent-kafka (librdkafka) consumer of `group` (assign partitions yourself)."""
    from confluent_kafka import Consumer

    return Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": group,
            **RDKAFKA_CONSUMER_DEFAULTS,
            **rdkafka_security(settings),
            **overrides,
        }
    )
