"""The kit's clients take the cloud's path: TLS to all three servers, SASL to the broker.

Certificates come from a CA made here (openssl CLI). PostgreSQL is Debian's 15 with ssl=on;
ClickHouse is the kit's own endpoint serving HTTPS; the broker is the embedded Tansu behind a
TLS proxy that asks for SASL PLAIN on the real wire (tests/kafka_tls_proxy.py), because Tansu
serves neither. A wrong CA must be refused in one line that says so.
"""

from __future__ import annotations

import os
import pwd
import shutil
import ssl
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import text

from cdc_kit import clients
from cdc_kit.config import Settings
from cdc_kit.errors import TlsError
from cdc_kit.services.broker import create_topics, find_broker_bin
from cdc_kit.services.clickhouse import ClickHouseService
from cdc_kit.services.home import prepare_home
from cdc_kit.services.process import free_ports, tcp_answers, wait_until
from tests.kafka_tls_proxy import KafkaTlsProxy
from tests.postgres15 import needs_postgres15, postgres15_running

OPENSSL = shutil.which("openssl")


@dataclass(frozen=True)
class Certs:
    ca: Path
    other_ca: Path  # signed nothing here: the "wrong CA"
    server_cert: Path
    server_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run([str(OPENSSL), *args], cwd=cwd, check=True, capture_output=True)


def _make_ca(folder: Path, name: str) -> None:
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "2", "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=folder,
    )  # fmt: skip


@pytest.fixture(scope="module")
def certs() -> Iterator[Certs]:
    """A CA, a server certificate it signed for localhost and 127.0.0.1, and another CA."""
    if OPENSSL is None:
        pytest.skip("no openssl command")
    folder = Path(tempfile.mkdtemp(prefix="cdc_kit_tls_"))
    folder.chmod(0o755)  # as root, PostgreSQL runs as `nobody` and must read its certificate
    try:
        _make_ca(folder, "ca")
        _make_ca(folder, "other_ca")
        (folder / "server.ext").write_text(
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
            "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
            "authorityKeyIdentifier=keyid\n"
        )
        _openssl(
            "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost",
            cwd=folder,
        )  # fmt: skip
        _openssl(
            "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "server.ext",
            cwd=folder,
        )  # fmt: skip
        for name in ("ca.crt", "other_ca.crt", "server.crt"):
            (folder / name).chmod(0o644)
        yield Certs(
            folder / "ca.crt", folder / "other_ca.crt", folder / "server.crt", folder / "server.key"
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# ---- PostgreSQL ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_postgres(certs: Certs) -> Iterator[Settings]:
    """A running PostgreSQL 15 with TLS on a free loopback port; its settings (no TLS yet)."""
    needs_postgres15()
    root = Path(tempfile.mkdtemp(prefix="cdc_kit_pg15_tls_"))
    root.chmod(0o755)
    (port,) = free_ports(1)
    settings = Settings(
        mode="docker", home=root / "home", pg_host="127.0.0.1", pg_port=port,
        pg_user="postgres", pg_password=uuid.uuid4().hex, pg_database="sqlmodel_db",
    )  # fmt: skip
    if os.geteuid() == 0:  # the server's user must own its key (PostgreSQL checks, 0600)
        user = pwd.getpwnam(settings.pg_run_as)
        os.chown(certs.server_key, user.pw_uid, user.pw_gid)
    certs.server_key.chmod(0o600)
    tls = {"ssl_cert_file": f"'{certs.server_cert}'", "ssl_key_file": f"'{certs.server_key}'"}
    try:
        with postgres15_running(settings, ssl="on", **tls):
            yield settings
    finally:
        shutil.rmtree(root, ignore_errors=True)


def with_tls(settings: Settings, **tls: object) -> Settings:
    """The same explicit settings plus these (derived ones, such as the DSN, made again)."""
    given = {k: v for k, v in settings.model_dump().items() if settings.is_explicit(k)}
    return Settings(**{**given, **tls})


def test_postgres_verify_full_connects_over_tls_with_the_kits_clients(
    tls_postgres: Settings, certs: Certs
) -> None:
    settings = with_tls(tls_postgres, pg_sslmode="verify-full", pg_sslrootcert=certs.ca)
    query = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
    conn = clients.pg_connection(settings)
    try:
        with conn.cursor() as cur:
            cur.execute(query)
            assert cur.fetchone() == (True,)
    finally:
        conn.close()
    engine = clients.pg_engine(settings)
    try:
        with engine.connect() as connection:
            assert connection.execute(text(query)).scalar() is True
    finally:
        engine.dispose()


def test_postgres_replication_connection_goes_over_tls(
    tls_postgres: Settings, certs: Certs
) -> None:
    """Capture's own connection (LogicalReplicationConnection) takes the same settings."""
    import psycopg2.extras

    settings = with_tls(tls_postgres, pg_sslmode="verify-full", pg_sslrootcert=certs.ca)
    conn = clients.pg_connection(
        settings, connection_factory=psycopg2.extras.LogicalReplicationConnection
    )
    try:
        cur = conn.cursor()
        cur.execute("IDENTIFY_SYSTEM")
        assert cur.fetchone() is not None
        assert conn.info.ssl_in_use
    finally:
        conn.close()


def test_postgres_with_a_wrong_ca_is_refused_in_one_line(
    tls_postgres: Settings, certs: Certs
) -> None:
    settings = with_tls(tls_postgres, pg_sslmode="verify-full", pg_sslrootcert=certs.other_ca)
    with pytest.raises(TlsError) as caught:
        clients.pg_connection(settings)
    message = str(caught.value)
    assert "\n" not in message
    assert "certificate verify failed" in message and "CDC_KIT_PG_SSLROOTCERT" in message
    import psycopg2

    assert isinstance(caught.value, psycopg2.OperationalError)  # retry loops still catch it


# ---- ClickHouse --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def https_clickhouse(certs: Certs) -> Iterator[Settings]:
    """The kit's ClickHouse endpoint serving HTTPS, started as `up` starts it."""
    root = Path(tempfile.mkdtemp(prefix="cdc_kit_ch_tls_"))
    (port,) = free_ports(1)
    settings = Settings(
        mode="embedded", home=root / "home", clickhouse_host="127.0.0.1", clickhouse_port=port,
        clickhouse_tls_cert=certs.server_cert, clickhouse_tls_key=certs.server_key,
    )  # fmt: skip
    prepare_home(settings.home)
    service = ClickHouseService(settings)
    try:
        service.ensure_started()
        yield settings
    finally:
        service.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_clickhouse_endpoint_serves_https_to_a_verifying_client(
    https_clickhouse: Settings, certs: Certs
) -> None:
    settings = with_tls(
        https_clickhouse, clickhouse_secure=True, clickhouse_verify=True,
        clickhouse_ca_file=certs.ca,
    )  # fmt: skip
    client = clients.clickhouse(settings, database="default")
    try:
        assert client.query("SELECT 40 + 2").result_rows == [(42,)]
        assert client.url.startswith("https://")
    finally:
        client.close()


def test_clickhouse_endpoint_speaks_no_plain_http_when_serving_https(
    https_clickhouse: Settings,
) -> None:
    from clickhouse_connect.driver.exceptions import OperationalError

    with pytest.raises(OperationalError):
        clients.clickhouse(https_clickhouse, database="default", connect_timeout=2)


def test_clickhouse_with_a_wrong_ca_is_refused_in_one_line(
    https_clickhouse: Settings, certs: Certs
) -> None:
    settings = with_tls(https_clickhouse, clickhouse_secure=True, clickhouse_ca_file=certs.other_ca)
    with pytest.raises(TlsError) as caught:
        clients.clickhouse(settings, database="default")
    message = str(caught.value)
    assert "\n" not in message
    assert "not accepted: unable to get local issuer certificate" in message
    assert str(certs.other_ca) in message


# ---- Kafka -------------------------------------------------------------------------------------

USER, PASSWORD = "kit-principal", "s3cret-for-this-test"


@dataclass
class SecureBroker:
    settings: Settings  # SASL_SSL + PLAIN + the test CA, bootstrap = the proxy
    proxy: KafkaTlsProxy


@pytest.fixture(scope="module")
def secure_broker(certs: Certs) -> Iterator[SecureBroker]:
    """Tansu (plaintext, advertising the proxy's address) behind the TLS/SASL proxy."""
    broker_port, proxy_port = free_ports(2)
    advertised = f"tcp://127.0.0.1:{proxy_port}"
    process = subprocess.Popen(
        [
            find_broker_bin(), "broker",
            "--listener-url", f"tcp://127.0.0.1:{broker_port}",
            "--advertised-listener-url", advertised,
            "--storage-engine", "memory://tansu/",
            "--cluster-id", f"cdc-kit-tls-{uuid.uuid4().hex[:8]}",
        ],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(certs.server_cert), str(certs.server_key))
    proxy = KafkaTlsProxy(("127.0.0.1", broker_port), proxy_port, context, {USER: PASSWORD})
    try:
        assert wait_until(lambda: tcp_answers("127.0.0.1", broker_port), timeout=10)
        proxy.start()
        settings = Settings(
            kafka_bootstrap=f"127.0.0.1:{proxy_port}",
            kafka_security_protocol="SASL_SSL",
            kafka_sasl_mechanism="PLAIN",
            kafka_sasl_username=USER,
            kafka_sasl_password=PASSWORD,
            kafka_ssl_cafile=certs.ca,
            cdc_topic=f"tls_{uuid.uuid4().hex[:8]}",
        )
        create_topics(settings, [settings.cdc_topic])  # the admin client goes through it too
        yield SecureBroker(settings, proxy)
    finally:
        proxy.stop()
        process.terminate()
        process.wait(10)


def test_kafka_python_produces_and_consumes_over_sasl_ssl(secure_broker: SecureBroker) -> None:
    from kafka import TopicPartition

    settings, topic = secure_broker.settings, secure_broker.settings.cdc_topic
    seen = len(secure_broker.proxy.logins)
    producer = clients.kafka_producer(settings)
    try:
        producer.send(topic, key=b"k", value=b"from kafka-python").get(timeout=10)
    finally:
        producer.close()
    consumer = clients.kafka_consumer(settings)
    try:
        consumer.assign([TopicPartition(topic, 0)])
        values: list[bytes] = []
        deadline = time.monotonic() + 15
        while b"from kafka-python" not in values and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                values += [record.value for record in records]
    finally:
        consumer.close()
    assert b"from kafka-python" in values
    logins = secure_broker.proxy.logins[seen:]
    assert logins and all(
        (login.mechanism, login.user, login.accepted) == ("PLAIN", USER, True) for login in logins
    )


def test_librdkafka_produces_and_consumes_over_sasl_ssl(secure_broker: SecureBroker) -> None:
    from confluent_kafka import OFFSET_BEGINNING, TopicPartition

    settings, topic = secure_broker.settings, secure_broker.settings.cdc_topic
    seen = len(secure_broker.proxy.logins)
    errors: list[str] = []
    producer = clients.rdkafka_producer(settings, error_cb=lambda e: errors.append(str(e)))
    producer.produce(topic, key=b"k", value=b"from librdkafka")
    assert producer.flush(15) == 0, errors
    consumer = clients.rdkafka_consumer(settings, f"tls-{uuid.uuid4().hex[:8]}")
    try:
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        values: list[bytes] = []
        deadline = time.monotonic() + 15
        while b"from librdkafka" not in values and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                values.append(message.value())
    finally:
        consumer.close()
    assert b"from librdkafka" in values, errors
    logins = secure_broker.proxy.logins[seen:]
    assert logins and all(
        (login.mechanism, login.user, login.accepted) == ("PLAIN", USER, True) for login in logins
    )


def test_kafka_with_a_wrong_ca_is_refused_in_one_line(
    secure_broker: SecureBroker, certs: Certs
) -> None:
    settings = with_tls(secure_broker.settings, kafka_ssl_cafile=certs.other_ca)
    with pytest.raises(TlsError) as caught:
        clients.kafka_admin(settings, bootstrap_timeout_ms=3000)
    message = str(caught.value)
    assert "\n" not in message
    assert "not accepted: unable to get local issuer certificate" in message


def test_a_wrong_password_is_refused_by_the_proxy(secure_broker: SecureBroker) -> None:
    """The proxy really checks: without it the tests above would prove nothing about SASL."""
    from kafka.errors import KafkaError

    settings = with_tls(secure_broker.settings, kafka_sasl_password="wrong")
    with pytest.raises(KafkaError):
        clients.kafka_admin(settings, bootstrap_timeout_ms=3000)
    assert secure_broker.proxy.logins[-1].accepted is False
