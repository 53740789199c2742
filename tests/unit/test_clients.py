"""Clients that fail to connect leave nothing behind (no service: the broker is a closed port)."""

from __future__ import annotations

import gc
import logging
import os
import threading
from pathlib import Path

import pytest
from pydantic import ValidationError

from cdc_kit import clients
from cdc_kit.__main__ import describe_settings_error
from cdc_kit.config import Settings, settings_env
from cdc_kit.services.process import free_ports


def test_an_admin_client_that_cannot_connect_leaves_no_thread_or_descriptor() -> None:
    """kafka-python 3.0's KafkaAdminClient raises from its constructor when no broker answers,
    and leaves its network thread and sockets behind; capture retries every few seconds while
    a broker is away, so each try must clean up."""
    settings = Settings(kafka_port=free_ports(1)[0])  # nothing listens there
    # kafka-python's error log records name its connections; pytest keeps every record for
    # its report, which would keep those sockets open. Capture logs to a file and keeps none.
    logging.disable(logging.CRITICAL)
    try:
        gc.collect()
        descriptors, threads = len(os.listdir("/proc/self/fd")), threading.active_count()
        failures = 0
        for _ in range(3):
            try:  # not pytest.raises: its traceback would keep the half-made client alive
                clients.kafka_admin(settings, bootstrap_timeout_ms=300)
            except Exception:  # noqa: BLE001 - kafka-python's timeout; any failure will do
                failures += 1
        gc.collect()  # as capture does after a failed session
    finally:
        logging.disable(logging.NOTSET)
    assert failures == 3, "nothing listens there: every try must fail"
    assert threading.active_count() <= threads  # (earlier tests' threads may end meanwhile)
    assert len(os.listdir("/proc/self/fd")) <= descriptors


def test_tls_and_sasl_settings_map_to_each_clients_own_names(tmp_path: Path) -> None:
    """One set of CDC_KIT_* names; kafka-python and librdkafka spell them differently."""
    ca = tmp_path / "ca.pem"
    ca.write_text("not read here")
    settings = Settings(
        kafka_security_protocol="sasl_ssl",  # any case, as people type it
        kafka_sasl_mechanism="scram-sha-256",
        kafka_sasl_username="kit",
        kafka_sasl_password="pw",
        kafka_ssl_cafile=ca,
        pg_sslmode="VERIFY-FULL",
        pg_sslrootcert=ca,
    )
    assert clients.kafka_security(settings) == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-256",
        "sasl_plain_username": "kit",
        "sasl_plain_password": "pw",
        "ssl_cafile": str(ca),
    }
    assert clients.rdkafka_security(settings) == {
        "security.protocol": "sasl_ssl",
        "sasl.mechanisms": "SCRAM-SHA-256",
        "sasl.username": "kit",
        "sasl.password": "pw",
        "ssl.ca.location": str(ca),
    }
    assert clients.pg_ssl_options(settings) == {"sslmode": "verify-full", "sslrootcert": str(ca)}
    assert "pw" not in repr(settings)  # the password is a secret: never in a log line
    assert settings_env(settings)["CDC_KIT_KAFKA_SASL_PASSWORD"] == "pw"  # a child needs it


def test_plaintext_defaults_add_nothing_to_the_clients() -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    if settings.kafka_security_protocol == "PLAINTEXT" and not settings.pg_sslmode:
        assert clients.kafka_security(settings) == {} == clients.rdkafka_security(settings)
        assert clients.pg_ssl_options(settings) == {}


def test_a_sasl_protocol_without_a_user_fails_in_one_line() -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(kafka_security_protocol="SASL_SSL", kafka_sasl_username="")
    line = describe_settings_error(caught.value)
    assert "\n" not in line and "CDC_KIT_KAFKA_SASL_USERNAME" in line


def test_a_missing_ca_file_is_named() -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(clickhouse_ca_file="/nonexistent/ca.pem")
    assert "CDC_KIT_CLICKHOUSE_CA_FILE=/nonexistent/ca.pem: no such file" in (
        describe_settings_error(caught.value)
    )
