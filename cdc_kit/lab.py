"""`python -m cdc_kit lab`: JupyterLab on the lessons, started the same way on every system.

`make lab` needs make and a POSIX shell; this is the same step for Windows too. It runs Jupyter
with this Python (`python -m jupyter lab`), so the lab's kernels see the kit it was started from,
and hands them the CDC_KIT_* settings of `.env` (they start in notebooks/, where they would not
find it): on Windows there is no `set -a; . ./.env`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from dotenv import dotenv_values

from cdc_kit.config import _repo_root
from cdc_kit.errors import FixableError
from cdc_kit.services.process import is_root


def notebooks_folder() -> Path:
    """The lessons' folder of the checkout this kit is installed from (`pip install -e .`)."""
    folder = _repo_root() / "notebooks"
    if not folder.is_dir():
        raise FixableError(
            f"no lessons folder at {folder}: run the lab from a clone of the cdc-kit repository, "
            "installed with `pip install -e .`"
        )
    return folder


def jupyter_command(folder: Path, extra: list[str]) -> list[str]:
    """JupyterLab on `folder`, on the loopback interface only (its lessons hold the lab's data)."""
    return [
        sys.executable,
        "-m",
        "jupyter",
        "lab",
        f"--notebook-dir={folder}",
        "--ServerApp.ip=127.0.0.1",
        *(["--allow-root"] if is_root() else []),  # containers and CI run as root
        *extra,
    ]


def kernel_environment(env_file: Path = Path(".env")) -> dict[str, str]:
    """This environment plus the CDC_KIT_* settings of `env_file` that it does not set (the
    environment wins, as it does for Settings)."""
    found = {
        key: value
        for key, value in dotenv_values(env_file).items()
        if key.startswith("CDC_KIT_") and value is not None
    }
    return {**found, **os.environ}


def run_jupyter_lab(folder: Path, extra: list[str]) -> int:
    """Run JupyterLab until it stops; its exit code."""
    command, env = jupyter_command(folder, extra), kernel_environment()
    if os.name == "posix":  # become Jupyter: Ctrl-C and signals reach it directly
        sys.stdout.flush()
        os.execve(command[0], command, env)
    return subprocess.call(command, env=env)  # Windows: exec would detach it from the console
