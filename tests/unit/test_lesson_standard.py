"""Every lesson has the frame a learner can follow alone (cdc_kit/lesson_solutions/README.md):
questions, objectives, minutes and prerequisites first; a prediction and a build exercise with
its self-check; keypoints and the way on at the end; one meaning per word."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import nbformat
import pytest

from cdc_kit.solutions import CHECK_TAG, EXERCISE_TAG, SOLUTIONS, lesson_notebooks, tagged

LESSONS = lesson_notebooks()
IDS = [path.stem for path in LESSONS]


def cells(path: Path) -> list[nbformat.NotebookNode]:
    return nbformat.read(path, as_version=4).cells


@pytest.mark.parametrize("path", LESSONS, ids=IDS)
def test_the_first_cell_says_questions_objectives_minutes_and_prerequisites(path: Path) -> None:
    first = cells(path)[0]
    assert first.cell_type == "markdown"
    text = first.source
    found = [word for word in ("Questions", "Objectives", "Time", "Prerequisites")
             if f"**{word}**" in text or f"**{word}:**" in text]  # fmt: skip
    assert found == ["Questions", "Objectives", "Time", "Prerequisites"], (
        f"{path.name}: the first cell has {found}"
    )
    assert [text.index(f"**{word}") for word in found] == sorted(
        text.index(f"**{word}") for word in found
    ), "in this order"
    assert re.search(r"\d+ min teaching · \d+ min exercises", text), (
        f"{path.name}: say the minutes as '15 min teaching · 10 min exercises'"
    )


@pytest.mark.parametrize("path", LESSONS, ids=IDS)
def test_a_prediction_comes_early_and_a_checked_build_exercise_later(path: Path) -> None:
    code = [cell for cell in cells(path) if cell.cell_type == "code"]
    exercises = [cell for cell in code if tagged(cell, EXERCISE_TAG)]
    predictions = [c for c in exercises if c.id.startswith("exercise-predict-")]
    builds = [c for c in exercises if not c.id.startswith("exercise-predict-")]
    assert predictions and builds, f"{path.name}: a prediction and a build exercise"
    assert code.index(predictions[0]) < code.index(builds[0]), "the prediction comes first"
    for build in builds:
        following = code[code.index(build) + 1]
        name = build.id.removeprefix("exercise-")
        assert tagged(following, CHECK_TAG) and following.id == f"check-{name}", (
            f"{path.name}: {build.id} is followed by its check cell check-{name}"
        )
    for prediction in predictions:
        reveal = code[code.index(prediction) + 1]
        assert not tagged(reveal, CHECK_TAG) and ".reveal_" in reveal.source, (
            f"{path.name}: the cell after {prediction.id} shows the answer with "
            "lessonNN.reveal_<name>(...), which never fails"
        )


@pytest.mark.parametrize("path", LESSONS, ids=IDS)
def test_the_lesson_ends_with_keypoints_and_the_way_on(path: Path) -> None:
    markdown = [cell.source for cell in cells(path) if cell.cell_type == "markdown"]
    assert "## Keypoints" in markdown[-1], f"{path.name}: the last cell holds the keypoints"
    if path != LESSONS[-1]:
        nxt = LESSONS[LESSONS.index(path) + 1].name
        assert "**Next:**" in markdown[-1] and nxt in markdown[-1], f"a link to {nxt}"


@pytest.mark.parametrize("path", LESSONS, ids=IDS)
def test_the_check_module_reveals_checks_and_shows_a_solution(path: Path) -> None:
    module = importlib.import_module(f"cdc_kit.checks.lesson{path.stem[:2]}")
    assert callable(getattr(module, "solution", None))
    sources = "\n".join(cell.source for cell in cells(path) if cell.cell_type == "code")
    for called in re.findall(rf"lesson{path.stem[:2]}\.(\w+)\(", sources):
        assert hasattr(module, called), f"{path.name} calls lesson{path.stem[:2]}.{called}"
    blocks = (SOLUTIONS / f"{path.stem}.py").read_text()
    assert "# %% exercise-predict-" in blocks, "the solved copy holds the right prediction"


@pytest.mark.parametrize("path", LESSONS, ids=IDS)
def test_tombstone_means_only_what_it_means_in_kafka(path: Path) -> None:
    for cell in cells(path):
        for sentence in re.split(r"(?<=[.:;!?])\s", cell.source):
            if re.search(r"tombstone", sentence, re.IGNORECASE):
                assert re.search(r"Kafka|Debezium|compaction|null value", sentence), (
                    f"{path.name}: 'tombstone' outside its Kafka meaning (the ClickHouse row "
                    f"is a delete marker): {sentence!r}"
                )
