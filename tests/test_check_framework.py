"""What every lesson's exercises share: escalating hints, predictions, worked solutions."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from cdc_kit.checks import common
from cdc_kit.checks.common import CheckFailed, judge_prediction, self_check, show_solution
from cdc_kit.solutions import SOLUTIONS, lesson_notebooks, read_solutions
from tests.conftest import REPO


@self_check
def check_answer(answer: object) -> None:
    if answer != 42:
        raise CheckFailed("not the answer", ("what is six times seven?", "see step 3"))


@pytest.fixture(autouse=True)
def fresh_attempts() -> None:
    common.forget_attempts()


def failure_of(answer: object) -> CheckFailed:
    with pytest.raises(CheckFailed) as failure:
        check_answer(answer)
    return failure.value


def test_hints_escalate_from_a_question_to_a_pointer_to_the_worked_solution() -> None:
    first, second, third = (failure_of(None) for _ in range(3))
    assert (first.hint, first.stuck) == ("what is six times seven?", "")
    assert (second.hint, second.stuck) == ("see step 3", "")
    assert third.hint == "see step 3"
    assert "test_check_framework.solution()" in third.stuck
    assert "Still stuck?" in "\n".join(third._render_traceback_())
    assert str(first) == "not the answer\nTry: what is six times seven?"


def test_a_different_failure_starts_with_its_own_first_hint() -> None:
    failure_of(None)
    failure_of(None)

    @self_check
    def check_other(answer: object) -> None:
        raise CheckFailed("also wrong", ("a question", "a pointer"))

    with pytest.raises(CheckFailed) as other:
        check_other(1)
    assert other.value.hint == "a question"


def test_a_passing_check_returns_its_result() -> None:
    assert check_answer(42) is None


@pytest.mark.parametrize(
    ("prediction", "says", "right"),
    [
        (None, "holds no prediction yet", False),
        (3, "✓ You predicted 3: right.", True),
        (1, "✗ You predicted 1; it is 3.", False),
    ],
    ids=["the placeholder", "a right prediction", "a wrong one"],
)
def test_a_prediction_gets_feedback_never_an_error(
    prediction: object, says: str, right: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    verdict = judge_prediction(
        prediction, 3, name="guess", why="one row per version.", wrong={1: "FINAL would say 1."}
    )
    out = capsys.readouterr().out
    assert verdict is right
    assert says in out and "one row per version." in out
    assert ("FINAL would say 1." in out) == (prediction == 1)


def test_every_lesson_packages_a_worked_solution_of_its_build_exercises(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for path in lesson_notebooks():
        blocks = read_solutions(SOLUTIONS / f"{path.stem}.py")
        builds = [cell for cell in blocks if not cell.startswith("exercise-predict-")]
        assert builds, f"{path.stem}: no build exercise solution"
        show_solution(f"lesson{path.stem[:2]}")
        out = capsys.readouterr().out
        assert all(cell in out for cell in builds), out
        predictions = [cell for cell in blocks if cell.startswith("exercise-predict-")]
        assert not any(cell in out for cell in predictions), "predictions are not spoiled"


def test_the_solutions_travel_inside_the_installed_package(tmp_path: Path) -> None:
    had_build = (REPO / "build").exists()
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
         "-w", str(tmp_path), str(REPO)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    if not had_build:  # setuptools builds in the source tree: leave it as it was
        shutil.rmtree(REPO / "build", ignore_errors=True)
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("cdc_kit-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for path in lesson_notebooks():
        assert f"cdc_kit/lesson_solutions/{path.stem}.py" in names
