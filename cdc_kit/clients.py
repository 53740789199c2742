"""Clients for PostgreSQL, the Kafka broker and ClickHouse, made from `Settings` alone.

Capture, the router and the stack all get their clients here, so one place decides the
settings that matter (restart-safe Kafka options, a ClickHouse client without a server
session) and no component needs the `Stack` to talk to a service.
"""

from __future__ import annotations

import contextlib
from typing import Any

from cdc_kit.config import Settings

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


def pg_connection(settings: Settings, **kwargs: Any) -> Any:
    """A plain psycopg2 connection (raw SQL, replication queries)."""
    import psycopg2

    return psycopg2.connect(str(settings.pg_dsn), **kwargs)


def pg_engine(settings: Settings, **kwargs: Any) -> Any:
    """A SQLAlchemy engine, what SQLModel sessions use.

    `pool_pre_ping` checks a pooled connection before use, so a restarted PostgreSQL does not
    hand out a dead connection.
    """
    from sqlmodel import create_engine

    return create_engine(settings.pg_sqlalchemy_url, **{"pool_pre_ping": True, **kwargs})


def kafka_producer(settings: Settings, **kwargs: Any) -> Any:
    """A kafka-python producer with restart-safe settings (override any with kwargs)."""
    from kafka import KafkaProducer

    return KafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, **{**PRODUCER_DEFAULTS, **kwargs}
    )


def kafka_consumer(settings: Settings, *topics: str, **kwargs: Any) -> Any:
    """A kafka-python consumer; pass topics to subscribe, or call `.assign()` yourself."""
    from kafka import KafkaConsumer

    return KafkaConsumer(
        *topics, bootstrap_servers=settings.kafka_bootstrap, **{**CONSUMER_DEFAULTS, **kwargs}
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
            **{"request_timeout_ms": 5000, "bootstrap_timeout_ms": 5000, **kwargs},
        )
    except BaseException:
        _close_half_made(admin)
        raise
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
    """
    import clickhouse_connect

    options: dict[str, Any] = {
        "autogenerate_session_id": False,
        "host": settings.clickhouse_host,
        "port": settings.clickhouse_port,
        "username": settings.clickhouse_user,
        "password": settings.clickhouse_password,
        "database": settings.clickhouse_database,
        **kwargs,
    }
    return clickhouse_connect.get_client(**options)


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
        {"bootstrap.servers": settings.kafka_bootstrap, **RDKAFKA_PRODUCER_DEFAULTS, **overrides}
    )


def rdkafka_consumer(settings: Settings, group: str, **overrides: Any) -> Any:
    """A confluent-kafka (librdkafka) consumer of `group` (assign partitions yourself)."""
    from confluent_kafka import Consumer

    return Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": group,
            **RDKAFKA_CONSUMER_DEFAULTS,
            **overrides,
        }
    )
