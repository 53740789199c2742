"""The one exception type cdc-kit raises for problems a person can fix (ports, paths, config).

The CLI prints these as a single line instead of a traceback.
"""


class CdcKitError(RuntimeError):
    """A problem with a clear, fixable cause; the message says what to do."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (drivers append long context below it)."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def one_line(exc: BaseException) -> str:
    """`TypeName: first line` — how services log an error that ended a session or batch."""
    return f"{type(exc).__name__}: {first_line(exc)}"
