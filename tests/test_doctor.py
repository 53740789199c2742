"""`python -m cdc_kit doctor`: what an instructor reads at a learner's desk."""

from __future__ import annotations

import subprocess
import sys

from cdc_kit.config import settings_env
from tests.conftest import REPO, router_held_elsewhere


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
