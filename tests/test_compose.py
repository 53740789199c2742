"""docker-compose.yaml agrees with cdc_kit.config, and Debian's docker-compose accepts it.

No Docker engine exists where the kit is tested, so nothing here starts a container: the file
is checked offline (`docker-compose config`) and cross-checked name by name against the
settings the notebooks use in docker mode (tests/test_docker_parity.py runs the lessons).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from cdc_kit.config import DEFAULT_PORTS, Settings
from tests.conftest import REPO, default_settings, skip_unless_ci

COMPOSE = REPO / "docker-compose.yaml"
KIT_SERVICES = ("capture", "router", "api")
#: A variable with a default or a required-message: ${NAME:-default} / ${NAME:?message}.
VARIABLE = re.compile(r"\$\{(?P<name>[A-Z0-9_]+)(?::(?P<kind>[-?])(?P<rest>[^}]*))?\}")
PASSWORDS = {"CDC_KIT_PG_PASSWORD": "pg-secret", "CDC_KIT_CLICKHOUSE_PASSWORD": "ch-secret"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def default_of(value: str) -> str:
    """The value compose uses when the variable is unset (`${X:-d}` -> d)."""
    match = VARIABLE.fullmatch(str(value))
    if match is None:
        return str(value)
    assert match["kind"] == "-", f"{value} has no default"
    return match["rest"]


def settings_field(env_name: str) -> str:
    return env_name.removeprefix("CDC_KIT_").lower()


# ---- the file itself --------------------------------------------------------------------
def test_images_are_pinned_to_exact_versions(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        if "build" in service:
            continue
        image = service["image"]
        tag = image.rsplit(":", 1)[-1]
        assert re.fullmatch(r"v?\d+(\.\d+){1,3}", tag), f"{name}: {image} is not pinned"


def test_services_publish_the_docker_ports_of_the_config_on_loopback(
    compose: dict[str, Any],
) -> None:
    expected = {
        "postgres": ("pg_port", 5432),
        "redpanda": ("kafka_port", 19092),
        "clickhouse": ("clickhouse_port", 8123),
    }
    for service, (field, inside) in expected.items():
        (published,) = compose["services"][service]["ports"]
        parts = re.fullmatch(
            r"(?P<host>[^:]+):(?P<variable>\$\{[^}]+\}):(?P<container>\d+)", published
        )
        assert parts, f"{service}: {published} is not host:${{PORT}}:port"
        host, variable, container = parts["host"], parts["variable"], parts["container"]
        assert host == "127.0.0.1", f"{service} must listen on loopback only"
        assert VARIABLE.fullmatch(variable)["name"] == f"CDC_KIT_{field.upper()}"
        assert int(default_of(variable)) == DEFAULT_PORTS["docker"][field]
        assert int(container) == inside
    assert DEFAULT_PORTS["docker"] == {
        "pg_port": 5433,
        "kafka_port": 19092,
        "clickhouse_port": 8123,
    }


def test_kit_containers_use_only_settings_names_with_the_configs_default_settings(
    compose: dict[str, Any],
) -> None:
    fields = Settings.model_fields
    docker = default_settings(mode="docker")
    for name in KIT_SERVICES:
        env = compose["services"][name]["environment"]
        assert env["CDC_KIT_MODE"] == "docker"
        for key, value in env.items():
            assert key.startswith("CDC_KIT_") and settings_field(key) in fields, (
                f"{name}: {key} is not a cdc_kit.config setting"
            )
            match = VARIABLE.fullmatch(str(value))
            if match and match["kind"] == "-":
                assert match["name"] == key, f"{key} is read from {match['name']}"
                assert default_of(value) == str(getattr(docker, settings_field(key))), key
    env = compose["services"]["capture"]["environment"]
    for key in (
        "CDC_KIT_CDC_TOPIC",
        "CDC_KIT_DLQ_TOPIC",
        "CDC_KIT_SLOT_NAME",
        "CDC_KIT_PUBLICATION_NAME",
        "CDC_KIT_PG_DATABASE",
        "CDC_KIT_CLICKHOUSE_DATABASE",
    ):
        assert key in env, f"capture does not set {key}"


def test_server_images_get_the_same_names_as_the_kit(compose: dict[str, Any]) -> None:
    services = compose["services"]
    kit = services["capture"]["environment"]
    postgres = services["postgres"]["environment"]
    assert postgres["POSTGRES_DB"] == kit["CDC_KIT_PG_DATABASE"]
    assert postgres["POSTGRES_USER"] == kit["CDC_KIT_PG_USER"]
    assert postgres["POSTGRES_PASSWORD"] == kit["CDC_KIT_PG_PASSWORD"]
    clickhouse = services["clickhouse"]["environment"]
    assert clickhouse["CLICKHOUSE_DB"] == kit["CDC_KIT_CLICKHOUSE_DATABASE"]
    assert clickhouse["CLICKHOUSE_USER"] == kit["CDC_KIT_CLICKHOUSE_USER"]
    assert clickhouse["CLICKHOUSE_PASSWORD"] == kit["CDC_KIT_CLICKHOUSE_PASSWORD"]
    assert "wal_level=logical" in services["postgres"]["command"]


def test_passwords_are_never_in_the_file(compose: dict[str, Any]) -> None:
    for key in PASSWORDS:
        value = compose["services"]["capture"]["environment"][key]
        assert VARIABLE.fullmatch(value)["kind"] == "?", f"{key} must be required, not defaulted"
    example = (REPO / ".env.example").read_text()
    for name in {*PASSWORDS, "REDPANDA_LICENSE", "COMPOSE_PROFILES"}:
        assert name in example, f".env.example does not mention {name}"


def test_topics_are_created_with_one_partition_before_anything_feeds_them(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    job = services["topics"]
    script = job["command"][0]
    assert "--partitions 1" in script and "auto_create_topics_enabled false" in script
    docker = default_settings(mode="docker")
    assert default_of(job["environment"]["CDC_TOPIC"]) == docker.cdc_topic
    assert default_of(job["environment"]["DLQ_TOPIC"]) == docker.dlq_topic
    for feeder in ("capture", "connect", "router"):
        needs = services[feeder]["depends_on"]
        assert needs["topics"]["condition"] == "service_completed_successfully", feeder


def test_kit_capture_and_connect_never_feed_the_topic_together(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["capture"]["profiles"] == ["kit"]
    assert services["connect"]["profiles"] == ["connect"]
    profiled = {name for name, service in services.items() if "profiles" in service}
    assert profiled == {"capture", "connect"}, "only the two feeders are optional"
    capture_slot = default_of(services["capture"]["environment"]["CDC_KIT_SLOT_NAME"])
    connect_slot = default_of(services["connect"]["environment"]["CDC_KIT_CONNECT_SLOT_NAME"])
    assert capture_slot == default_settings().slot_name
    assert connect_slot != capture_slot
    assert "REDPANDA_LICENSE" in services["connect"]["environment"]
    for name, service in services.items():
        if name != "connect":
            assert "REDPANDA_LICENSE" not in service.get("environment", {}), name
    assert "./redpanda-connect.yaml:/connect.yaml:ro" in services["connect"]["volumes"]


def test_kit_services_run_cli_commands_that_exist(compose: dict[str, Any]) -> None:
    for name, command in (("capture", "capture"), ("router", "route"), ("api", "api")):
        service = compose["services"][name]
        assert service["build"] == "."
        assert service["command"][:4] == ["python", "-m", "cdc_kit", command]
        shown = subprocess.run(
            [sys.executable, "-m", "cdc_kit", command, "--help"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert shown.returncode == 0, shown.stderr


def test_dockerfile_builds_the_kit_without_secrets() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11\.\d+-slim", dockerfile, re.M)
    assert "--constraint requirements.txt" in dockerfile
    assert re.search(r"^USER cdckit$", dockerfile, re.M), "the services must not run as root"
    ignored = (REPO / ".dockerignore").read_text().split()
    assert ".env" in ignored


# ---- Debian's docker-compose checks the file offline --------------------------------------
def docker_compose() -> str:
    found = shutil.which("docker-compose")
    if found:
        return found
    skip_unless_ci(
        "docker-compose not installed (apt-get install docker-compose); CI runs this",
        "docker-compose is missing in CI: .ci/run installs it with apt-get",
    )


def run_compose(
    tmp_path: Path, extra_env: dict[str, str], *args: str
) -> subprocess.CompletedProcess:
    """docker-compose with a clean environment: no CDC_KIT_* of this shell, no local .env."""
    env_file = tmp_path / "empty.env"
    env_file.write_text("")
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), **extra_env}
    return subprocess.run(
        [docker_compose(), "--env-file", str(env_file), "-f", str(COMPOSE), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )


def test_docker_compose_accepts_the_file(tmp_path: Path) -> None:
    checked = run_compose(tmp_path, PASSWORDS, "config", "-q")
    assert checked.returncode == 0, checked.stderr


def test_docker_compose_refuses_to_start_without_passwords(tmp_path: Path) -> None:
    checked = run_compose(tmp_path, {}, "config", "-q")
    assert checked.returncode != 0
    assert (
        "CDC_KIT_PG_PASSWORD" in checked.stderr or "CDC_KIT_CLICKHOUSE_PASSWORD" in checked.stderr
    )


def test_resolved_containers_settings_match_the_config(tmp_path: Path) -> None:
    resolved = run_compose(tmp_path, PASSWORDS, "config")
    assert resolved.returncode == 0, resolved.stderr
    services = yaml.safe_load(resolved.stdout)["services"]
    host = default_settings(mode="docker")
    for name in KIT_SERVICES:
        env = {key: str(value) for key, value in services[name]["environment"].items()}
        inside = default_settings(**{settings_field(key): value for key, value in env.items()})
        assert inside.mode == "docker" and inside.confirm_after == "broker"
        assert inside.pg_dsn == "postgresql://postgres:pg-secret@postgres:5432/sqlmodel_db"
        assert inside.kafka_bootstrap == "redpanda:9092"
        assert (inside.clickhouse_host, inside.clickhouse_port) == ("clickhouse", 8123)
        for same in (
            "cdc_topic",
            "dlq_topic",
            "slot_name",
            "publication_name",
            "pg_database",
            "clickhouse_database",
            "clickhouse_user",
        ):
            assert getattr(inside, same) == getattr(host, same), same
        # The router service has a group of its own, so a lesson's Router(stack) (default
        # group) may run beside it: one router per consumer group.
        expected_group = "cdc_kit_router_service" if name == "router" else host.router_group
        assert inside.router_group == expected_group, name
    published = {  # docker-compose 1.29 writes "127.0.0.1:5433:5432/tcp"
        name: int(str(services[name]["ports"][0]).split(":")[1])
        for name in ("postgres", "redpanda", "clickhouse")
    }
    assert published == {
        "postgres": host.pg_port,
        "redpanda": host.kafka_port,
        "clickhouse": host.clickhouse_port,
    }
    advertised = " ".join(services["redpanda"]["command"])
    assert f"external://127.0.0.1:{host.kafka_port}" in advertised
