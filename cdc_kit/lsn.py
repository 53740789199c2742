"""PostgreSQL log sequence numbers (LSNs): the text form "16/B374D848" <-> a 64-bit integer.

An LSN is a byte position in the write-ahead log. PostgreSQL prints it as two hex numbers,
the high and low 32 bits. As an integer, (hi << 32) | lo, it sorts correctly and fits
ClickHouse's UInt64, which is why the warehouse stores `lsn` as a number.
"""

from __future__ import annotations

import re

#: An LSN as PostgreSQL prints it: two hex numbers of 1 to 8 digits. The message contract
#: (cdc_kit.contract) checks event metadata against the same pattern.
LSN_PATTERN = r"^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$"
_LSN_TEXT = re.compile(LSN_PATTERN)


def str_to_lsn(text: str) -> int:
    """'16/B374D848' -> 97500059720. Raises ValueError naming the bad input."""
    if not isinstance(text, str) or _LSN_TEXT.fullmatch(text) is None:
        raise ValueError(f"not an LSN (expected 'X/Y' in hex, e.g. '0/1A2B3C4'): {text!r}")
    return checked_str_to_lsn(text)


def checked_str_to_lsn(text: str) -> int:
    """`str_to_lsn` for text already known to be 'X/Y' in hex (the router's decoder matched it
    against that pattern): the per-event path need not check it twice."""
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) | int(low, 16)


def lsn_to_str(value: int) -> str:
    """97500059720 -> '16/B374D848' (uppercase hex, as PostgreSQL prints it)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**64:
        raise ValueError(f"an LSN is an unsigned 64-bit integer, not {value!r}")
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"
