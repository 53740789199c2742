"""Lesson 09 in a real browser: JupyterLab, Chromium, the widget panel clicked like a learner.

The test starts JupyterLab on a free loopback port over a solved copy of the lessons, opens
09_widget_lab in Debian's Chromium (driven by Playwright), runs every cell, then inserts a
customer and deletes it with the panel's buttons. The panel's ClickHouse FINAL view must show
the row, then its deletion, refreshed by the panel itself; a query cross-checks ClickHouse.
The kernels inherit the session stack's CDC_KIT_* variables through the JupyterLab process.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cdc_kit.services.process import free_ports
from cdc_kit.solutions import write_solved
from cdc_kit.stack import Stack
from tests.conftest import skip_unless_ci

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
NOTEBOOK = "09_widget_lab.ipynb"


def require_chromium() -> None:
    """Skip without Chromium, except under CI, which must have installed it (.ci/run does)."""
    if not CHROMIUM.exists():
        skip_unless_ci(
            f"no Chromium at {CHROMIUM}: `apt-get install -y chromium` to run this test",
            f"CI must run the browser test, but {CHROMIUM} is missing (.ci/run installs)",
        )


class JupyterLab:
    """A JupyterLab server of our own: free port, token, a folder of solved lessons."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root = root
        (self.port,) = free_ports(1)
        self.token = secrets.token_hex(16)
        self.url = f"http://127.0.0.1:{self.port}"
        state = root.parent / "jupyter"
        self.log = (root.parent / "jupyterlab.log").open("w")
        # No news or update questions popping up over the notebook.
        settings = state / "settings" / "@jupyterlab" / "apputils-extension"
        settings.mkdir(parents=True)
        (settings / "notification.jupyterlab-settings").write_text(
            '{"fetchNews": "false", "checkForUpdates": false}'
        )
        env = {
            **env,
            "JUPYTER_RUNTIME_DIR": str(state / "runtime"),
            "JUPYTERLAB_WORKSPACES_DIR": str(state / "workspaces"),
            "JUPYTERLAB_SETTINGS_DIR": str(state / "settings"),
        }
        command = [
            sys.executable, "-m", "jupyterlab", "--no-browser",
            "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={self.port}",
            "--ServerApp.port_retries=0", f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={root}", "--LabApp.news_url=None",
            "--LabApp.check_for_updates_class=jupyterlab.handlers.announcements.NeverCheckForUpdate",
        ]  # fmt: skip
        if os.geteuid() == 0:
            command.append("--allow-root")
        self.process = subprocess.Popen(
            command, env=env, cwd=root, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                code = self.process.returncode
                raise RuntimeError(f"JupyterLab exited with {code}: see {self.log.name}")
            try:
                with urllib.request.urlopen(f"{self.url}/api/status?token={self.token}", timeout=2):
                    return
            except OSError:
                time.sleep(0.3)
        raise RuntimeError(f"JupyterLab did not answer within {timeout:.0f} s: see {self.log.name}")

    def stop(self) -> None:
        """SIGTERM: the server shuts its kernels down (and so frees the router's group)."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        self.log.close()


@pytest.fixture()
def jupyterlab(stack: Stack, tmp_path: Path) -> Iterator[JupyterLab]:
    require_chromium()  # before writing the lessons and starting JupyterLab for nothing
    root = tmp_path / "lessons"
    write_solved(root)
    lab = JupyterLab(root, dict(os.environ))
    try:
        lab.wait_ready()
        yield lab
    finally:
        lab.stop()


def test_widget_lab_in_a_real_browser(jupyterlab: JupyterLab, stack: Stack) -> None:
    from playwright.sync_api import expect, sync_playwright

    name = f"Browser Bee {uuid.uuid4().hex[:6]}"
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1000})
            page.goto(f"{jupyterlab.url}/lab/tree/{NOTEBOOK}?token={jupyterlab.token}")
            # Wait for the kernel: "Run All" before it is connected asks which kernel to start.
            expect(page.get_by_text("Python 3 (ipykernel) | Idle")).to_be_visible(timeout=60_000)
            # Run > Run All Cells, as a learner would.
            page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
            page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()

            # The last code cell is the self-check: its ✓ means every cell ran.
            expect(page.get_by_text("✓ deleting customer")).to_be_visible(timeout=180_000)
            panel = page.locator(".cdc-lab").first
            panel.scroll_into_view_if_needed()
            expect(panel).to_be_visible()

            panel.locator("select").first.select_option("customer")
            name_field = panel.locator(".widget-text", has=page.locator("label", has_text="name"))
            name_field.locator("input").first.fill(name)
            panel.get_by_role("button", name="Insert").click()
            final = panel.locator(".cdc-final")
            expect(final).to_contain_text(name, timeout=30_000)  # refreshed by the panel itself
            ch = stack.clickhouse()
            rows = ch.query(
                "SELECT id FROM customer FINAL WHERE name = {name:String}",
                parameters={"name": name},
            ).result_rows
            assert len(rows) == 1, rows
            customer_id = rows[0][0]
            panel.screenshot(path=str(ARTIFACTS / "widget_lab_insert.png"))

            panel.get_by_role("button", name="Delete").click()
            expect(final).to_contain_text("no live row", timeout=30_000)
            # The delete marker stays among the stored versions (older ones may be merged away).
            newest_version = panel.locator(".cdc-versions tbody tr").last.locator("td")
            expect(newest_version.first).to_have_text(str(customer_id))
            expect(newest_version.nth(6)).to_have_text("1")  # is_deleted
            panel.screenshot(path=str(ARTIFACTS / "widget_lab.png"))
            live, markers = ch.query(
                "SELECT (SELECT count() FROM customer FINAL WHERE id = {id:UInt64}), "
                "(SELECT countIf(is_deleted = 1) FROM customer WHERE id = {id:UInt64})",
                parameters={"id": customer_id},
            ).result_rows[0]
            assert (live, markers) == (0, 1)
        finally:
            browser.close()
