"""Start the endpoint: open the folder, bind the address, hand chDB's start-up pages back,
serve until a signal. `python -m cdc_kit.services.clickhouse_server` runs `main`."""

from __future__ import annotations

import argparse
import ctypes
import importlib.util
import logging
import os
import signal
import ssl
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cdc_kit.services.clickhouse_server.engine import (
    MAX_MEMORY_MB,
    ChdbEngine,
)
from cdc_kit.services.clickhouse_server.handler import (
    ChdbHTTPServer,
    Credentials,
)

log = logging.getLogger("cdc_kit.services.clickhouse_server")


MADV_PAGEOUT = 21  # linux/mman.h


def release_startup_pages() -> int:
    """Hand back the pages of chDB's library that only its start-up read; MB advised.

    Loading chDB runs ClickHouse's start-up code across its 550 MB library, and ~250 MB of it
    stays resident though queries never use it again. MADV_PAGEOUT (Linux 5.4+) lets the
    kernel drop those unchanged file pages now; whatever a query needs is read back on first
    use. Only read-only mappings are advised. Elsewhere, or on older kernels, nothing happens.
    """
    if not sys.platform.startswith("linux"):
        return 0
    library = importlib.util.find_spec("chdb._chdb")
    if library is None or not library.origin:
        return 0
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    advised = 0
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            if len(fields) < 6 or fields[5].strip() != library.origin or "w" in fields[1]:
                continue
            start, end = (int(address, 16) for address in fields[0].split("-"))
            if libc.madvise(start, end - start, MADV_PAGEOUT) != 0:
                return 0  # EINVAL: this kernel has no MADV_PAGEOUT
            advised += end - start
    return advised >> 20


def make_server(
    host: str,
    port: int,
    data_dir: Path,
    max_memory_mb: int = MAX_MEMORY_MB,
    credentials: Credentials | None = None,
    tls: tuple[Path, Path] | None = None,
) -> ChdbHTTPServer:
    """Open the chDB folder and bind host:port (port 0 picks one: see server_address).

    `tls`: (certificate, key) files: serve HTTPS instead of HTTP.
    `server_close()` also closes the chDB connections, which releases the folder's lock.
    """
    context = tls_context(*tls) if tls else None
    engine = ChdbEngine(Path(data_dir), max_memory_mb)
    try:
        return ChdbHTTPServer((host, port), engine, credentials, context)
    except BaseException:
        engine.close()
        raise


def tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server-side context with this certificate chain and key (TLS 1.2 or newer)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert), str(key))
    return context


def _on_signal(server: ChdbHTTPServer) -> Callable[[int, Any], None]:
    def stop(signum: int, _frame: Any) -> None:
        log.info("%s received, stopping", signal.Signals(signum).name)
        # shutdown() waits for serve_forever() to return: it must not run on the main thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    return stop


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cdc_kit.services.clickhouse_server",
        description="chDB behind the ClickHouse HTTP interface (for clickhouse-connect and curl)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=18123, help="0 picks a free port")
    parser.add_argument("--data-dir", type=Path, required=True, help="chDB data folder")
    parser.add_argument(
        "--max-memory-mb",
        type=int,
        default=MAX_MEMORY_MB,
        help=f"memory all queries together may use (default {MAX_MEMORY_MB})",
    )
    parser.add_argument(
        "--credentials-file",
        type=Path,
        help="a lab file with clickhouse_user/clickhouse_password: only that user is served",
    )
    parser.add_argument("--tls-cert", type=Path, help="certificate (chain) file: serve HTTPS")
    parser.add_argument("--tls-key", type=Path, help="its private key file")
    parser.add_argument("--log-level", default="INFO", help="DEBUG logs every request")
    args = parser.parse_args(argv)
    if (args.tls_cert is None) != (args.tls_key is None):
        parser.error("--tls-cert and --tls-key go together")
    tls = (args.tls_cert, args.tls_key) if args.tls_cert else None
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    # UTC like the docker stack's ClickHouse, whatever the learner's laptop uses. chDB reads
    # TZ once, when it is first imported (in ChdbEngine), so this must come first.
    os.environ["TZ"] = "UTC"
    if hasattr(time, "tzset"):
        time.tzset()
    # chDB imports pyarrow (and numpy) for DataFrame and Arrow-table results, which this server
    # never returns (it sends ClickHouse's own formats, Arrow included, as bytes); chDB treats
    # pyarrow as optional, so leaving it out of this process saves ~65 MB.
    sys.modules.setdefault("pyarrow", None)  # type: ignore[arg-type]
    try:
        credentials = None
        if args.credentials_file is not None:
            credentials = Credentials.from_file(args.credentials_file)
        server = make_server(
            args.host, args.port, args.data_dir, args.max_memory_mb, credentials, tls
        )
    except Exception as exc:  # noqa: BLE001 - whatever stopped the start: one line in the log
        log.error("cannot start: %s", exc)
        return 1
    advised = release_startup_pages()
    log.debug("asked the kernel to drop chDB's start-up pages (%d MB of mappings)", advised)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _on_signal(server))
    host, port = server.server_address[:2]
    version = server.engine.version
    scheme = "https" if tls else "http"
    log.info(
        "listening on %s://%s:%d (chDB %s, data in %s)", scheme, host, port, version, args.data_dir
    )
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        log.info("stopped")
    return 0
