"""Shared fixtures: a real embedded stack on free loopback ports in a temporary folder.

One stack serves the whole session (starting it costs ~1-2 s); tests that kill or restart
services build their own with `make_test_env`, so they never disturb the shared one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import httpx
import pytest
from sqlalchemy import text

from cdc_kit import olap, oltp
from cdc_kit.checks import CheckFailed
from cdc_kit.config import Settings, settings_env
from cdc_kit.router import Router
from cdc_kit.services.broker import create_topics
from cdc_kit.services.process import free_ports
from cdc_kit.stack import Stack, ensure_running

REPO = Path(__file__).resolve().parent.parent


def make_test_env(prefix: str = "cdc_kit_test_") -> dict[str, str]:
    """CDC_KIT_* variables for a fresh stack: temp state folder, free ports, unique topics.

    The folder is made reachable for the unprivileged PostgreSQL user when tests run as root
    (mkdtemp creates it private); we only open up the folder we just created ourselves.
    """
    root = Path(tempfile.mkdtemp(prefix=prefix))
    root.chmod(0o755)
    pg, kafka, clickhouse = free_ports(3)
    return {
        "CDC_KIT_MODE": "embedded",
        "CDC_KIT_HOME": str(root / "home"),
        "CDC_KIT_PG_PORT": str(pg),
        "CDC_KIT_KAFKA_PORT": str(kafka),
        "CDC_KIT_CLICKHOUSE_PORT": str(clickhouse),
    }


def settings_from(env: dict[str, str]) -> Settings:
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        return Settings()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def environment_without_kit_settings() -> dict[str, str]:
    """This process's environment minus CDC_KIT_* (the session stack exports its own)."""
    return {key: value for key, value in os.environ.items() if not key.startswith("CDC_KIT_")}


def default_settings(**overrides: object) -> Settings:
    """Settings from the code's defaults alone: no CDC_KIT_* of this process (the session
    stack exports its own) and no .env file."""
    saved = {key: os.environ.pop(key) for key in list(os.environ) if key.startswith("CDC_KIT_")}
    try:
        return Settings(_env_file=None, **overrides)  # type: ignore[call-arg]
    finally:
        os.environ.update(saved)


def run_cli(
    env: dict[str, str], *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run `python -m cdc_kit ...` with the given CDC_KIT_* variables."""
    return subprocess.run(
        [sys.executable, "-m", "cdc_kit", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )


def skip_unless_ci(reason: str, under_ci: str) -> NoReturn:
    """Skip the test for `reason`; under CI, which must run it, fail with `under_ci` instead."""
    if os.environ.get("CI"):
        pytest.fail(under_ci)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def stack_env() -> Iterator[dict[str, str]]:
    """Environment of the shared test stack; also exported so notebook kernels inherit it."""
    env = make_test_env("cdc_kit_session_")
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    yield env
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def stack(stack_env: dict[str, str]) -> Iterator[Stack]:
    """The shared, running embedded stack."""
    settings = settings_from(stack_env)
    running = ensure_running(settings)
    yield running
    running.down()
    shutil.rmtree(Path(stack_env["CDC_KIT_HOME"]).parent, ignore_errors=True)


def isolated_settings(base: Settings, tag: str, **extra: object) -> Settings:
    """Settings whose slot, publication, topics (created here), router group and ClickHouse
    database are this test's own, on the shared services."""
    settings = base.model_copy(
        update={
            "slot_name": f"slot_{tag}",
            "publication_name": f"pub_{tag}",
            "cdc_topic": f"cdc_{tag}",
            "dlq_topic": f"dlq_{tag}",
            "router_group": f"group_{tag}",
            "clickhouse_database": f"db_{tag}",
            **extra,
        }
    )
    create_topics(settings.kafka_bootstrap, [settings.cdc_topic, settings.dlq_topic])
    return settings


@pytest.fixture()
def isolated(stack: Stack) -> Iterator[tuple[Stack, Router]]:
    """A router with its own topics, group and ClickHouse database on the shared stack."""
    settings = isolated_settings(stack.settings, uuid.uuid4().hex[:8])
    isolated_stack = Stack(settings)
    router = Router(isolated_stack, registry=dict(olap.OLAP_MODELS), batch_size=1000)
    yield isolated_stack, router
    router.close()
    stack.clickhouse().command(f"DROP DATABASE IF EXISTS `{settings.clickhouse_database}`")


HOLD_THE_GROUP = """
import sys, time
from cdc_kit.router import Router
router = Router(hands_over=sys.argv[1] == "hands-over")
router.start()
print("ready", flush=True)
while router.running:
    time.sleep(0.05)
print("handed over to", router.stats()["handed_over_to"], flush=True)
time.sleep(60)
"""


@contextmanager
def router_held_elsewhere(
    settings: Settings, hands_over: bool = False
) -> Iterator[subprocess.Popen[str]]:
    """A router routing `settings`' group in the background in another process (a kernel of
    lesson 09, or `python -m cdc_kit route` when `hands_over` is False); killed at the end like
    an interrupted kernel (nothing is released by hand: the operating system frees it)."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_THE_GROUP, "hands-over" if hands_over else "keeps"],
        env=settings_env(settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ready", holder.stderr.read()
        yield holder
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
        holder.stderr.close()


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()


@contextmanager
def compose_services(env: dict[str, str], logs: Path) -> Iterator[None]:
    """Capture and the router as `python -m cdc_kit capture|route` processes with `env`, as
    docker-compose.yaml runs them (the router service on a consumer group of its own); their
    logs in `logs/`. Both must still run when the block ends; they are stopped either way."""
    processes: dict[str, subprocess.Popen] = {}
    try:
        for name in ("capture", "route"):
            group = {"CDC_KIT_ROUTER_GROUP": "cdc_kit_router_service"} if name == "route" else {}
            with (logs / f"{name}.log").open("w") as log:
                processes[name] = subprocess.Popen(
                    [sys.executable, "-m", "cdc_kit", name],
                    env={**env, **group},
                    cwd=REPO,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
        yield
        for name, process in processes.items():
            assert process.poll() is None, f"{name} exited: {(logs / f'{name}.log').read_text()}"
    finally:
        for process in processes.values():
            stop(process)


@contextmanager
def running_api(settings: Settings) -> Iterator[httpx.Client]:
    """`python -m cdc_kit api --port N` on `settings`' services, started as a learner starts
    it; a client for it once it answers /health."""
    port = free_ports(1)[0]
    server = subprocess.Popen(
        [sys.executable, "-m", "cdc_kit", "api", "--port", str(port)],
        env=settings_env(settings),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    try:
        deadline = time.monotonic() + 120
        while True:
            if server.poll() is not None:
                output = server.stdout.read() if server.stdout else ""
                pytest.fail(f"the API server exited: {output}")
            try:
                if client.get("/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("the API server did not answer /health within 120 s")
            time.sleep(0.2)
        yield client
    finally:
        client.close()
        stop(server)


# ---- the lessons' self-checks ----------------------------------------------------------------
def load_sample_shop(stack: Stack) -> Stack:
    """The lesson tables with their sample rows (rows already there are kept)."""
    oltp.create_all(stack.pg_engine())
    oltp.load_sample_data(stack.pg_engine(), progress=False)
    return stack


@pytest.fixture(scope="module")
def lab(stack: Stack) -> Stack:
    """The session stack with the lesson tables and their sample rows."""
    return load_sample_shop(stack)


@pytest.fixture(scope="module")
def running_router(stack: Stack) -> Iterator[Router]:
    """The sample shop routed into ClickHouse, the router's thread still running (lesson 09).

    It takes `stack`, not `lab`, so modules with a `lab` fixture of their own can use it too.
    """
    router = Router(load_sample_shop(stack))
    router.catch_up()
    router.start()
    yield router
    router.close()


def run_sql(stack: Stack, sql: str, **params: object) -> list[tuple]:
    """One statement in its own transaction; the rows it returns, if any."""
    with stack.pg_engine().begin() as db:
        result = db.execute(text(sql), params)
        return [tuple(row) for row in result] if result.returns_rows else []


def fails(check: object, *args: object, says: str) -> CheckFailed:
    """Run a self-check that must fail; its message says `says` and it has a hint."""
    with pytest.raises(CheckFailed) as failure:
        check(*args)  # type: ignore[operator]
    assert says in str(failure.value), str(failure.value)
    assert failure.value.hint, "a failed check must say what to try"
    return failure.value


def drop_slot_and_publication(pg: Any, settings: Any) -> None:
    """Wait until the slot's consumer let go (its walsender exits a moment later), drop both."""
    with pg.cursor() as cur:
        for _ in range(50):
            cur.execute(
                "SELECT active FROM pg_replication_slots WHERE slot_name = %s",
                (settings.slot_name,),
            )
            row = cur.fetchone()
            if row is None or not row[0]:
                break
            time.sleep(0.2)
        cur.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
            "WHERE slot_name = %s",
            (settings.slot_name,),
        )
        cur.execute(f'DROP PUBLICATION IF EXISTS "{settings.publication_name}"')
