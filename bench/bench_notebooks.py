"""How long each lesson takes to run top to bottom (machine time, for docs/workshop.md).

A fresh embedded stack starts in a temp folder; every notebook in notebooks/ runs in order in
its own kernel (kernel start included), twice: first on the fresh stack, then again after all
of them ran once (cells are idempotent). The time a *room* needs is longer: reading, typing,
the exercise; the workshop guide estimates that separately.

Run: `python bench/bench_notebooks.py`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cdc_kit.config import settings_env
from cdc_kit.solutions import run_notebook, solve
from cdc_kit.stack import scratch_stack

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("[0-9]*.ipynb"))


def run_solved(path: Path, env: dict[str, str]) -> float:
    """Seconds for the instructor's copy (a learner's stops at its self-checks)."""
    return run_notebook(solve(path), env, timeout=600)


def main(argv: list[str] | None = None) -> dict[str, list[float]]:
    argparse.ArgumentParser(description=__doc__).parse_args(argv)
    timings: dict[str, list[float]] = {path.stem: [] for path in NOTEBOOKS}
    with scratch_stack() as stack:
        env = settings_env(stack.settings)
        for _ in range(2):
            for path in NOTEBOOKS:
                timings[path.stem].append(run_solved(path, env))
    print("lesson run time, seconds (fresh stack, then again)")
    for name, (fresh, again) in timings.items():
        print(f"  {name:<36} {fresh:6.1f}  {again:6.1f}")
    fresh_total = sum(times[0] for times in timings.values())
    again_total = sum(times[1] for times in timings.values())
    print(f"  {'all lessons in order (goal <= 120)':<36} {fresh_total:6.1f}  {again_total:6.1f}")
    return timings


if __name__ == "__main__":
    main()
