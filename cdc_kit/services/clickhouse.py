"""The embedded ClickHouse service: one process owning a chDB data folder, reached over HTTP.

chDB allows one process per data folder, but notebooks, the router and tests are separate
processes, so one server (`cdc_kit.services.clickhouse_server`) owns the folder and everyone
else uses the official clickhouse-connect client over the ClickHouse HTTP interface.
"""

from __future__ import annotations

import ssl
import sys
import urllib.error
import urllib.request
from pathlib import Path

from cdc_kit.config import LAB_FILE
from cdc_kit.services.process import ProcessService


class ClickHouseService(ProcessService):
    """chDB behind the ClickHouse HTTP interface on 127.0.0.1."""

    name = "clickhouse"
    start_timeout = 60.0

    @property
    def address(self) -> str:
        scheme = "https" if self.settings.clickhouse_tls_cert else "http"
        return f"{scheme}://{self.settings.clickhouse_host}:{self.settings.clickhouse_port}"

    def ports(self) -> list[tuple[str, int, str]]:
        return [
            (
                self.settings.clickhouse_host,
                int(self.settings.clickhouse_port or 0),
                "CDC_KIT_CLICKHOUSE_PORT",
            )
        ]

    def prepare(self) -> None:
        (self.home / "clickhouse").mkdir(parents=True, exist_ok=True, mode=0o700)

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "cdc_kit.services.clickhouse_server",
            "--host",
            self.settings.clickhouse_host,
            "--port",
            str(self.settings.clickhouse_port),
            "--data-dir",
            str(self.home / "clickhouse" / "data"),
            *(["--credentials-file", str(self.lab_file)] if self.lab_file.exists() else []),
            *self._tls_arguments(),
        ]

    def _tls_arguments(self) -> list[str]:
        """HTTPS when the settings give a certificate and key (CDC_KIT_CLICKHOUSE_TLS_*)."""
        s = self.settings
        if s.clickhouse_tls_cert is None or s.clickhouse_tls_key is None:
            return []
        return ["--tls-cert", str(s.clickhouse_tls_cert), "--tls-key", str(s.clickhouse_tls_key)]

    @property
    def lab_file(self) -> Path:
        """This lab's credentials: the endpoint serves only them (other users share loopback)."""
        return self.home / LAB_FILE

    def healthy(self) -> bool:
        # Alive is all this asks: the certificate is the clients' business (they verify it).
        context = ssl._create_unverified_context() if self.settings.clickhouse_tls_cert else None
        try:
            with urllib.request.urlopen(
                f"{self.address}/ping", timeout=2, context=context
            ) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False
