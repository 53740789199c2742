"""The one exception type cdc-kit raises for problems a person can fix (ports, paths, config).

The CLI prints these as a single line instead of a traceback.
"""


class CdcKitError(RuntimeError):
    """A problem with a clear, fixable cause; the message says what to do."""
