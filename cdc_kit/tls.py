"""Say in one line why a TLS connection fails, for clients whose own error does not.

kafka-python reports a refused certificate as "NoBrokersAvailable" and clickhouse-connect as
pages of urllib3 retries; one handshake with the same CA names the real cause.
"""

from __future__ import annotations

import socket
import ssl
from pathlib import Path


def split_address(address: str, default_port: int) -> tuple[str, int]:
    """`host:port` (or `[v6]:port`, or a bare host) -> (host, port)."""
    address = address.strip()
    if address.startswith("["):
        host, _, rest = address[1:].partition("]")
        return host, int(rest.lstrip(":") or default_port)
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        return address, default_port
    return host, int(port)


def handshake_problem(
    host: str, port: int, cafile: Path | str | None, verify: bool = True, timeout: float = 5.0
) -> str | None:
    """Why a TLS handshake with host:port fails (certificate, name, not TLS), or None if it
    succeeds or the server cannot be reached at all (that is another error, not TLS's)."""
    context = ssl.create_default_context(cafile=str(cafile) if cafile else None)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname=host),
        ):
            return None
    except ssl.SSLCertVerificationError as exc:
        where = f" (CA file {cafile})" if cafile else " (the system's CAs)"
        return f"certificate of {host}:{port} not accepted: {exc.verify_message}{where}"
    except ssl.SSLError as exc:
        return f"TLS handshake with {host}:{port} failed: {exc.reason or exc}; does it speak TLS?"
    except OSError:
        return None
