"""Memory of one learner's lab: the embedded stack + JupyterLab + the kernels a learner leaves.

This is what a Binder session (about 2 GB) or one seat on a shared workshop server must hold.
A fresh stack (with capture) starts in a temp folder; `jupyter lab` runs as a server; a kernel
(started with jupyter_client, as JupyterLab starts them) opens the stack, loads the sample data
and starts a Router in a thread. Memory is read at three moments: stack idle, stack + lab +
an idle kernel, and after the kernel routed the sample data. Then, on a second fresh stack with
its own JupyterLab, every lesson runs with Run All, in order, each in a kernel of its own that
stays alive afterwards (JupyterLab keeps kernels until they are shut down): the fourth moment.
RSS counts shared pages once per process (an upper bound); PSS shares them out (what the
machine really spends).

Run: `python bench/bench_binder_memory.py`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
from jupyter_client.manager import KernelManager

from cdc_kit.config import settings_env
from cdc_kit.services.process import free_ports
from cdc_kit.solutions import RunAll, lesson_notebooks, run_all, solve
from cdc_kit.stack import Stack, scratch_stack

MB = 2**20

KERNEL_OPENS_LAB = """
from cdc_kit.stack import ensure_running
stack = ensure_running()
ch = stack.clickhouse()
ch.query("SELECT 1")
"""
KERNEL_ROUTES = """
import time
from cdc_kit import oltp
from cdc_kit.router import Router
oltp.create_all(stack.pg_engine())
oltp.load_sample_data(stack.pg_engine(), scale=20, progress=False)
router = Router(stack).start()
deadline = time.time() + 60
while time.time() < deadline and not ch.query(
        "EXISTS TABLE orderitem").result_rows[0][0]:
    time.sleep(0.2)
time.sleep(2)
print(router.stats()["routed"])
"""


def tree(pid: int) -> list[psutil.Process]:
    proc = psutil.Process(pid)
    return [proc, *proc.children(recursive=True)]


def memory(procs: list[psutil.Process]) -> tuple[float, float]:
    """(RSS, PSS) in MB summed over processes that still run."""
    rss = pss = 0.0
    for proc in procs:
        try:
            info = proc.memory_full_info()
        except psutil.Error:
            continue
        rss += info.rss / MB
        pss += getattr(info, "pss", info.rss) / MB
    return rss, pss


def run(kernel: KernelManager, code: str) -> str:
    client = kernel.client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=60)
        out: list[str] = []
        reply = client.execute_interactive(
            code,
            timeout=300,
            output_hook=lambda msg: out.append(str(msg["content"].get("text", ""))),
        )
        if reply["content"]["status"] != "ok":
            raise RuntimeError(f"kernel error: {reply['content'].get('evalue')}")
        return "".join(out).strip()
    finally:
        client.stop_channels()


def snapshot(parts: dict[str, list[psutil.Process]]) -> dict[str, tuple[float, float]]:
    return {name: memory(procs) for name, procs in parts.items()}


def stack_parts(stack: Stack) -> dict[str, list[psutil.Process]]:
    return {row.name: tree(row.pid) for row in stack.status() if row.pid}


def start_lab(env: dict[str, str], home: Path) -> subprocess.Popen:
    port = free_ports(1)[0]
    command = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        f"--port={port}",
        "--ServerApp.ip=127.0.0.1",
        "--ServerApp.token=bench",
        f"--notebook-dir={home}",
    ]
    if os.geteuid() == 0:
        command.append("--allow-root")
    lab = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(8)  # JupyterLab needs a few seconds to import and build its settings
    return lab


def lessons_left_alive(stack: Stack) -> dict[str, list[float]]:
    """Every solved lesson with Run All, in order, its kernel left alive; then the memory."""
    env = settings_env(stack.settings)
    lab = start_lab(env, stack.settings.home)
    lessons: list[RunAll] = []
    try:
        for path in lesson_notebooks():
            lessons.append(run_all(solve(path), env, timeout=600))
            failed = lessons[-1].failed_cell
            if failed is not None:
                raise RuntimeError(f"{path.name} failed at {failed.id}: {lessons[-1].error()}")
        time.sleep(2)
        pids = [lesson.pid() for lesson in lessons if lesson.pid()]
        parts = {
            **stack_parts(stack),
            "jupyterlab": tree(lab.pid),
            "11 lesson kernels": [proc for pid in pids for proc in tree(pid)],
        }
        return {name: list(value) for name, value in snapshot(parts).items()}
    finally:
        for lesson in lessons:
            lesson.shutdown()
        lab.terminate()
        lab.wait(30)


def main(argv: list[str] | None = None) -> dict[str, dict[str, list[float]]]:
    argparse.ArgumentParser(description=__doc__).parse_args(argv)
    results: dict[str, dict[str, list[float]]] = {}
    with scratch_stack() as stack:
        env = settings_env(stack.settings)
        time.sleep(3)  # let every service settle into idle
        idle = snapshot(stack_parts(stack))
        results["stack idle"] = {k: list(v) for k, v in idle.items()}
        lab = start_lab(env, stack.settings.home)
        kernel = KernelManager(kernel_name="python3")
        kernel.start_kernel(env=env)
        try:
            run(kernel, KERNEL_OPENS_LAB)
            parts = {
                **stack_parts(stack),
                "jupyterlab": tree(lab.pid),
                "kernel": tree(kernel.provisioner.pid),
            }
            results["stack + lab + idle kernel"] = {k: list(v) for k, v in snapshot(parts).items()}
            routed = run(kernel, KERNEL_ROUTES)
            time.sleep(2)
            results["... + kernel routed sample x20"] = {
                k: list(v) for k, v in snapshot(parts).items()
            }
            print(f"the kernel's router wrote {routed} rows")
        finally:
            kernel.shutdown_kernel(now=True)
            lab.terminate()
            lab.wait(30)
    with scratch_stack() as stack:
        results["stack + lab + 11 lessons' kernels alive"] = lessons_left_alive(stack)
    print("memory of one lab, MB (RSS = upper bound, PSS = shared pages split; goal < 2048)")
    for moment, parts in results.items():
        rss = sum(v[0] for v in parts.values())
        pss = sum(v[1] for v in parts.values())
        detail = ", ".join(f"{name} {v[1]:.0f}" for name, v in parts.items())
        print(f"  {moment:<40} RSS {rss:7.0f}  PSS {pss:7.0f}   (PSS: {detail})")
    return results


if __name__ == "__main__":
    main()
