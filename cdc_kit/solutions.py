"""The instructor's copy: every lesson notebook with each exercise cell replaced by its solution.

Exercise cells carry the tag `exercise` and a stable cell id;
`cdc_kit/lesson_solutions/<notebook stem>.py` holds one block per id, each opened by a line
`# %% <cell id>`. They live in the package (a self-paced learner asks for one with
`lessonNN.solution()`), outside `notebooks/`, so nobody browsing the lessons stumbles on them.

    python -m cdc_kit solutions DIR      # writes DIR/<notebook>.ipynb, exercises solved
"""

from __future__ import annotations

import argparse
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat

from cdc_kit.errors import FixableError

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"
SOLUTIONS = Path(__file__).resolve().parent / "lesson_solutions"

EXERCISE_TAG = "exercise"
CHECK_TAG = "check"
_BLOCK = re.compile(r"^# %% (\S+)[ \t]*$", re.MULTILINE)


def lesson_notebooks(folder: Path = NOTEBOOKS) -> list[Path]:
    """The lessons in order: `00_...ipynb`, `01_...ipynb`, ..."""
    return sorted(folder.glob("[0-9][0-9]_*.ipynb"))


def tagged(cell: nbformat.NotebookNode, tag: str) -> bool:
    return tag in cell.get("metadata", {}).get("tags", [])


def read_solutions(path: Path) -> dict[str, str]:
    """Cell id -> solution code, from a `# %% <cell id>` block file."""
    if not path.exists():
        return {}
    text = path.read_text(encoding="utf-8")
    parts = _BLOCK.split(text)
    blocks: dict[str, str] = {}
    for cell_id, code in zip(parts[1::2], parts[2::2], strict=True):
        if cell_id in blocks:
            raise FixableError(f"{path.name}: two solution blocks for cell {cell_id!r}")
        blocks[cell_id] = code.strip("\n") + "\n"
    return blocks


def solve(notebook_path: Path, solutions_dir: Path = SOLUTIONS) -> nbformat.NotebookNode:
    """The notebook with every exercise cell's source replaced by its solution block.

    Refuses (with the names) an exercise cell without a block, and a block without a cell:
    either means the notebook and its solutions drifted apart.
    """
    notebook = nbformat.read(notebook_path, as_version=4)
    solutions_path = solutions_dir / f"{notebook_path.stem}.py"
    blocks = read_solutions(solutions_path)
    exercises = [cell for cell in notebook.cells if tagged(cell, EXERCISE_TAG)]
    renumbered = [c.get("id", "?") for c in exercises if not c.get("id", "").startswith("exercise")]
    if renumbered:
        raise FixableError(
            f"{notebook_path.name}: exercise cell id(s) {', '.join(renumbered)} are not of the "
            "form 'exercise-<name>': were they renumbered by nbstripout? Restore them "
            "(git checkout) and strip outputs with `nbstripout --keep-id`"
        )
    missing = [cell.get("id", "?") for cell in exercises if cell.get("id") not in blocks]
    if missing:
        raise FixableError(
            f"{notebook_path.name}: no solution for exercise cell(s) {', '.join(missing)}; "
            f"add a '# %% <cell id>' block for each to {solutions_path}"
        )
    unused = sorted(set(blocks) - {cell.get("id") for cell in exercises})
    if unused:
        raise FixableError(
            f"{solutions_path.name}: block(s) {', '.join(unused)} match no exercise cell of "
            f"{notebook_path.name} (cell ids must match and carry the tag '{EXERCISE_TAG}')"
        )
    for cell in exercises:
        cell.source = blocks[cell.id].rstrip("\n")
    return notebook


def run_notebook(
    notebook: nbformat.NotebookNode,
    env: dict[str, str] | None = None,
    allow_errors: bool = False,
    timeout: int = 300,
) -> float:
    """Run a notebook top to bottom in a fresh kernel, working in notebooks/; its seconds.

    The outputs land in `notebook` (tests read them; benchmarks time the run).
    """
    from nbclient import NotebookClient

    client = NotebookClient(
        notebook,
        timeout=timeout,
        kernel_name="python3",
        allow_errors=allow_errors,
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    began = time.monotonic()
    client.execute(**({"env": env} if env is not None else {}))
    return time.monotonic() - began


@dataclass
class RunAll:
    """A notebook run as JupyterLab's Run All runs it: stopped at the first failing cell, its
    kernel left alive (as JupyterLab leaves it) until `shutdown()`."""

    notebook: nbformat.NotebookNode
    client: Any
    failed_at: int | None  # index of the cell that failed, or None
    seconds: float

    @property
    def failed_cell(self) -> nbformat.NotebookNode | None:
        return None if self.failed_at is None else self.notebook.cells[self.failed_at]

    def error(self) -> str:
        """`ename: evalue` of the failing cell's error, or ''."""
        cell = self.failed_cell
        for output in cell.get("outputs", []) if cell is not None else []:
            if output.get("output_type") == "error":
                return f"{output.get('ename')}: {output.get('evalue', '')}"
        return ""

    def pid(self) -> int | None:
        """The kernel's process id (for memory figures)."""
        provisioner = getattr(self.client.km, "provisioner", None)
        process = getattr(provisioner, "process", None)
        return getattr(process, "pid", None)

    def shutdown(self) -> None:
        from jupyter_core.utils import run_sync

        self.client.kc.stop_channels()
        run_sync(self.client.km.shutdown_kernel)(now=True)  # the manager is an async one


def run_all(
    notebook: nbformat.NotebookNode, env: dict[str, str] | None = None, timeout: int = 300
) -> RunAll:
    """Run every cell until the first error, in a new kernel that stays alive afterwards."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    client = NotebookClient(
        notebook,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    client.km = client.create_kernel_manager()
    client.start_new_kernel(**({"env": env} if env is not None else {}))
    client.start_new_kernel_client()
    began = time.monotonic()
    failed_at = None
    for index, cell in enumerate(notebook.cells):
        try:
            client.execute_cell(cell, index)
        except CellExecutionError:
            failed_at = index
            break
    return RunAll(notebook, client, failed_at, time.monotonic() - began)


def write_solved(
    out_dir: Path, notebooks_dir: Path = NOTEBOOKS, solutions_dir: Path = SOLUTIONS
) -> list[Path]:
    """Write a solved copy of every lesson into `out_dir`; returns the paths written."""
    out_dir = Path(out_dir).resolve()
    if out_dir == Path(notebooks_dir).resolve():
        raise FixableError("refusing to overwrite the learners' notebooks: choose another folder")
    notebooks = lesson_notebooks(notebooks_dir)
    solved = [(path, solve(path, solutions_dir)) for path in notebooks]  # all or nothing
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path, notebook in solved:
        target = out_dir / path.name
        nbformat.write(notebook, target)
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cdc_kit solutions",
        description="Write the instructor's copy of every lesson, exercises solved, into DIR.",
    )
    parser.add_argument("dir", type=Path, help="folder to write the solved notebooks to")
    args = parser.parse_args(argv)
    for path in write_solved(args.dir):
        print(f"wrote {path}")
    return 0
