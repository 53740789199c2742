"""cdc-kit's exceptions: one family, so `except CdcKitError` catches whatever the kit raises.

    CdcKitError                      the root
    ├── FixableError                 a person can fix it (a port, a path, a setting, a service
    │   ├── PortInUse                that is down); the CLI prints it as one line
    │   └── TlsError                 a TLS handshake failed (CA, name, no TLS)
    ├── EventParseError, OlapValidationError, ModelError, PgOutputDecodeError   (also ValueError)
    ├── RoutingError, DeliveryError, BrokerRestarted, RequestError
    └── CheckFailed                  a lesson's exercise is not solved yet
"""


class CdcKitError(Exception):
    """The root of every exception cdc-kit raises."""


class FixableError(CdcKitError, RuntimeError):
    """A problem with a clear, fixable cause; the message says what to do (one line)."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (drivers append long context below it)."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def one_line(exc: BaseException) -> str:
    """`TypeName: first line` — how services log an error that ended a session or batch."""
    return f"{type(exc).__name__}: {first_line(exc)}"


class TlsError(FixableError):
    """A TLS handshake failed (wrong CA, wrong name, no TLS there): one line saying which."""
