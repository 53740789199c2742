"""The smoke CI runs on a second Python (`make smoke PY=python3.13`, see tools/smoke.sh).

In a venv of its own, installed from requirements.txt: `up`, the solved lessons 00-02, `demo`,
then (named by tools/smoke.sh) the pipeline test. The full suite covers all of this on 3.11,
so here it runs only when tools/smoke.sh asks for it (CDC_KIT_SMOKE=1).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from cdc_kit.solutions import NOTEBOOKS, run_notebook, solve
from tests.conftest import make_test_env, run_cli

pytestmark = pytest.mark.skipif(
    not os.environ.get("CDC_KIT_SMOKE"), reason="the smoke runs in `make smoke PY=...`"
)

LESSONS = ["00_your_lab", "01_watch_a_change_travel", "02_sqlmodel_entities"]


def test_up_the_first_lessons_and_demo_on_this_python(capsys: pytest.CaptureFixture[str]) -> None:
    env = make_test_env("cdc_kit_smoke_")
    try:
        started = run_cli(env, "up", timeout=180)
        assert started.returncode == 0, started.stdout + started.stderr
        for stem in LESSONS:
            seconds = run_notebook(solve(NOTEBOOKS / f"{stem}.ipynb"), env)
            with capsys.disabled():
                print(f"\n    {stem}: solved in {seconds:.1f} s on Python {sys.version.split()[0]}")
        demo = run_cli(env, "demo", timeout=300)
        assert demo.returncode == 0, demo.stdout + demo.stderr
    finally:
        run_cli(env, "down")
        shutil.rmtree(Path(env["CDC_KIT_HOME"]).parent, ignore_errors=True)
