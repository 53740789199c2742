"""Every lesson notebook runs against the real stack, three ways (and in docker mode, and on
PostgreSQL 15: tests/test_docker_parity.py).

(a) the room: after the seed's API walkthrough and a Bulk, every unsolved lesson with Run All
    (each must stop at an exercise's check), then every solved copy, in order, with all those
    kernels left alive: "works after the others, from any state, beside their kernels";
(b) each unsolved notebook, errors allowed: its `check` cells, and only those, must fail;
(c) each solved notebook alone on a fresh stack of its own, with every code cell run twice in
    a row: "works on a fresh stack", and its cells are idempotent.

Kernels inherit the CDC_KIT_* variables of the stack they must use (see conftest), so the
notebooks call the same `ensure_running()` a learner calls, pointed at the test services.
"""

from __future__ import annotations

import copy
from pathlib import Path

import nbformat
import pytest
from sqlalchemy import text

from cdc_kit.config import settings_env
from cdc_kit.errors import CdcKitError
from cdc_kit.solutions import (
    CHECK_TAG,
    EXERCISE_TAG,
    RunAll,
    lesson_notebooks,
    run_all,
    run_notebook,
    tagged,
    write_solved,
)
from cdc_kit.stack import Stack, scratch_stack
from cdc_kit.widgets import ChangeLab
from tests.conftest import run_cli, running_api

LESSONS = lesson_notebooks()
IDS = [path.stem for path in LESSONS]


@pytest.fixture(scope="session")
def solved_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("solved")
    write_solved(folder)
    return folder


def execute(
    path: Path | nbformat.NotebookNode,
    env: dict[str, str] | None = None,
    allow_errors: bool = False,
) -> tuple[nbformat.NotebookNode, float]:
    """Run a notebook top to bottom in a fresh kernel (working folder: notebooks/)."""
    notebook = nbformat.read(path, as_version=4) if isinstance(path, Path) else path
    return notebook, run_notebook(notebook, env, allow_errors)


def report(capsys: pytest.CaptureFixture[str], line: str) -> None:
    with capsys.disabled():
        print(f"\n    {line}", end="")


def test_there_are_lessons() -> None:
    assert [path.name[:2] for path in LESSONS][:6] == ["00", "01", "02", "03", "04", "05"]


@pytest.mark.parametrize("path", LESSONS, ids=IDS)
def test_notebook_is_committed_clean_with_stable_exercise_ids(path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(not cell.get("outputs") and cell.get("execution_count") is None for cell in code), (
        f"{path.name} is committed with outputs; run `nbstripout --keep-id {path}`"
    )
    exercises = [cell for cell in code if tagged(cell, EXERCISE_TAG)]
    checks = [cell for cell in code if tagged(cell, CHECK_TAG)]
    assert exercises and checks, f"{path.name} needs an exercise cell and a check cell"
    for cell in exercises + checks:
        kind = EXERCISE_TAG if cell in exercises else CHECK_TAG
        assert cell.get("id", "").startswith(f"{kind}-"), (
            f"{path.name}: a cell tagged {kind!r} has the id {cell.get('id')!r}, not "
            f"'{kind}-<name>' (renumbered by nbstripout? use --keep-id)"
        )


def what_a_room_did_before(stack: Stack) -> None:
    """What a room has done before the first lesson: the seed's API walkthrough (a customer,
    a product, an order, as its README's curl commands do), the widget lab's Bulk, and rows
    deleted and a table truncated by hand."""
    jane = {"email": "jane@example.com", "name": "Jane Doe", "country": "USA",
            "city": "San Francisco"}  # fmt: skip
    mouse = {"name": "Wireless Mouse", "category": "Electronics", "price": "29.99"}
    with running_api(stack.settings) as api:
        customer = api.post("/api/customers", json=jane).json()
        product = api.post("/api/products", json=mouse).json()
        order = api.post("/api/orders", json={"customerId": customer["id"], "total": "29.99"})
        assert order.status_code == 201 and product["id"], order.text
    lab = ChangeLab(stack, seed=19)
    lab.bulk(100)
    lab.close()
    with stack.pg_engine().begin() as db:
        db.execute(text("DELETE FROM product WHERE id IN (2, 3)"))  # their items go too
        db.execute(text("TRUNCATE orderitem"))


@pytest.mark.slow
def test_a_room_runs_every_lesson_with_the_kernels_of_the_earlier_ones_alive(
    solved_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The room: after the seed's walkthrough and a Bulk, every learner's lesson runs with Run
    All (stopping at its first failing cell, as JupyterLab does) and its kernel stays alive.
    Each unsolved lesson must stop at an exercise's check, and nowhere else; then the solved
    copies run the same way, beside all those kernels, and pass."""
    alive: list[RunAll] = []
    with scratch_stack(mode="embedded") as room:
        env = settings_env(room.settings)
        try:
            what_a_room_did_before(room)
            for path in LESSONS:
                run = run_all(nbformat.read(path, as_version=4), env)
                alive.append(run)
                cell = run.failed_cell
                assert cell is not None and tagged(cell, CHECK_TAG), (
                    f"{path.name} (unsolved) stopped at {cell and cell.get('id')}: {run.error()}"
                )
                assert run.error().startswith("CheckFailed"), run.error()
                report(capsys, f"{path.stem}: unsolved, stopped at {cell.id} after "
                               f"{run.seconds:.1f} s")  # fmt: skip
            solved_seconds = 0.0
            for path in LESSONS:
                run = run_all(nbformat.read(solved_dir / path.name, as_version=4), env)
                alive.append(run)
                assert run.failed_at is None, (
                    f"{path.name} (solved) failed at {run.failed_cell.get('id')}: {run.error()}"
                )
                solved_seconds += run.seconds
                beside = f"beside {len(alive) - 1} live kernels"
                report(capsys, f"{path.stem}: solved in {run.seconds:.1f} s {beside} "
                               f"({solved_seconds:.0f} s so far)")  # fmt: skip
        finally:
            for run in alive:
                run.shutdown()


@pytest.mark.parametrize("path", LESSONS, ids=IDS)
def test_unsolved_notebook_fails_only_in_its_check_cells(path: Path, stack: Stack) -> None:
    notebook, _ = execute(path, allow_errors=True)
    failed = [
        cell.get("id")
        for cell in notebook.cells
        if cell.cell_type == "code"
        and any(output.get("output_type") == "error" for output in cell.get("outputs", []))
    ]
    checks = [cell.get("id") for cell in notebook.cells if tagged(cell, CHECK_TAG)]
    errors = {
        cell.get("id"): [o.get("ename") + ": " + o.get("evalue", "") for o in cell.outputs
                         if o.get("output_type") == "error"]
        for cell in notebook.cells
        if cell.get("id") in failed
    }  # fmt: skip
    assert failed == checks, f"{path.name}: failing cells {errors}, check cells {checks}"
    for cell_id in checks:
        assert all(line.startswith("CheckFailed") for line in errors[cell_id]), errors[cell_id]


@pytest.mark.slow
@pytest.mark.parametrize("path", LESSONS, ids=IDS)
def test_solved_notebook_runs_alone_on_a_fresh_stack_with_every_cell_twice(
    path: Path, solved_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A fresh stack of its own (the kernel sees only its settings); every code cell runs
    twice in a row, as a learner who presses Shift+Enter twice: cells are idempotent."""
    notebook = nbformat.read(solved_dir / path.name, as_version=4)
    cells = []
    for cell in notebook.cells:
        cells.append(cell)
        if cell.cell_type == "code":
            again = copy.deepcopy(cell)
            again.id = f"{cell.id}-again"
            cells.append(again)
    notebook.cells = cells
    with scratch_stack(mode="embedded") as fresh:
        _, seconds = execute(notebook, env=settings_env(fresh.settings))
        report(capsys, f"{path.stem}: {seconds:.1f} s solved, every cell twice, fresh stack")


# ---- the instructor's copy ---------------------------------------------------------------------
def test_the_cli_writes_every_lesson_with_its_exercises_solved(tmp_path: Path) -> None:
    result = run_cli({}, "solutions", str(tmp_path / "solved"))
    assert result.returncode == 0, result.stderr
    for path in LESSONS:
        solved = nbformat.read(tmp_path / "solved" / path.name, as_version=4)
        original = nbformat.read(path, as_version=4)
        for before, after in zip(original.cells, solved.cells, strict=True):
            if tagged(before, EXERCISE_TAG):
                assert after.source != before.source and after.id == before.id
            else:
                assert after.source == before.source


def _lesson(folder: Path, cell_id: str) -> Path:
    notebook = nbformat.v4.new_notebook()
    exercise = nbformat.v4.new_code_cell("answer = None", id=cell_id)
    exercise.metadata["tags"] = [EXERCISE_TAG]
    notebook.cells = [exercise, nbformat.v4.new_code_cell("check(answer)", id="check-x")]
    folder.mkdir(exist_ok=True)
    path = folder / "00_demo.ipynb"
    nbformat.write(notebook, path)
    return path


@pytest.mark.parametrize(
    ("cell_id", "blocks", "says"),
    [
        ("exercise-x", "", "no solution for exercise cell"),
        ("exercise-x", "# %% exercise-x\nanswer = 1\n# %% exercise-y\nb = 2\n", "match no"),
        ("3", "# %% exercise-x\nanswer = 1\n", "renumbered by nbstripout"),
    ],
    ids=["a missing solution", "a solution without its cell", "renumbered cell ids"],
)
def test_solutions_refuse_a_notebook_they_drifted_from(
    tmp_path: Path, cell_id: str, blocks: str, says: str
) -> None:
    notebooks, solutions = tmp_path / "notebooks", tmp_path / "solutions"
    _lesson(notebooks, cell_id)
    solutions.mkdir()
    (solutions / "00_demo.py").write_text(blocks)
    with pytest.raises(CdcKitError, match=says):
        write_solved(tmp_path / "out", notebooks, solutions)
    assert not (tmp_path / "out").exists(), "nothing is written when one lesson is wrong"


def test_solutions_never_overwrite_the_learners_notebooks(tmp_path: Path) -> None:
    notebooks = tmp_path / "notebooks"
    _lesson(notebooks, "exercise-x")
    with pytest.raises(CdcKitError, match="refusing to overwrite"):
        write_solved(notebooks, notebooks, tmp_path)
