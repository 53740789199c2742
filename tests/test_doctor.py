"""`python -m cdc_kit doctor`: what an instructor reads at a learner's desk."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cdc_kit import doctor
from cdc_kit.config import settings_env
from cdc_kit.services.process import free_ports
from cdc_kit.stack import Stack
from tests.conftest import REPO, default_settings, router_held_elsewhere


def test_doctor_names_the_router_process_the_slots_and_the_dead_letters(stack, isolated) -> None:
    own, router = isolated
    settings = own.settings
    producer = stack.kafka_producer()
    producer.send(settings.cdc_topic, b"not json at all")
    producer.flush()
    assert router.step(timeout_ms=3000).dead_lettered == 1
    router.close()  # let go of the group: the other process holds it while the doctor looks
    with router_held_elsewhere(settings) as holder:
        result = subprocess.run(
            [sys.executable, "-m", "cdc_kit", "doctor"],
            env=settings_env(settings), cwd=REPO, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    report = result.stdout
    assert result.returncode == 3, report + result.stderr  # there is something to do
    assert "Traceback" not in result.stderr
    for service in ("postgres", "broker", "clickhouse", "capture"):
        assert any(line.startswith(service) for line in report.splitlines()), report
    assert f"slot          {stack.settings.slot_name}:" in report  # the session capture's slot
    assert "retains" in report
    assert f"in pid {holder.pid}" in report  # who holds the router's group
    assert "1 waiting (decode: 1)" in report
    assert "replay_dead_letters()" in report
    assert f"the capture's slot {settings.slot_name} does not exist" in report


@pytest.mark.parametrize(
    ("mode", "advice"),
    [
        ("embedded", "broker is stopped: run `python -m cdc_kit up` (its log: {home}/logs/"
                     "broker.log)"),
        ("docker", "broker is stopped: run `docker compose up -d` (its log: `docker compose "
                   "logs redpanda`)"),
    ],
)
def test_doctor_says_how_to_start_a_service_that_is_down(
    tmp_path: Path, mode: str, advice: str
) -> None:
    """Nothing runs here: the advice names the command of the mode and where its log is (the
    compose file calls the broker redpanda)."""
    pg, kafka, clickhouse = free_ports(3)
    settings = default_settings(
        home=tmp_path / "home", mode=mode, pg_port=pg, kafka_port=kafka, clickhouse_port=clickhouse
    )
    report = doctor.examine(Stack(settings))
    assert advice.format(home=tmp_path / "home") in report.advice
