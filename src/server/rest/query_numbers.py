"""Whole numbers in query strings, paths and headers. `str.isdigit` alone admits "²" and
other digits `int()` refuses, and `int()` refuses more than 4,300 digits; a client
may send either, so the numbers the HTTP projection reads are read here."""

from __future__ import annotations

# Longer runs of digits read as `_HUGE`: every caller checks a range far below it,
# so the verdict is the one the number itself would get.
_MAX_DIGITS = 20
_HUGE = 10**_MAX_DIGITS
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def is_whole_number(text: str) -> bool:
    """ASCII digits only."""
    return text.isascii() and text.isdigit()


def whole_number(text: str) -> int | None:
    """`text` (ASCII digits) as an int, else None; past 20 digits, 10**20."""
    if not is_whole_number(text):
        return None
    digits = text.lstrip("0") or "0"
    return int(digits) if len(digits) <= _MAX_DIGITS else _HUGE


def int64(text: str) -> int | None:
    """A whole number, `-` before it allowed, within a proto int64's range; else None."""
    negative = text.startswith("-")
    value = whole_number(text[1:] if negative else text)
    if value is None:
        return None
    value = -value if negative else value
    return value if INT64_MIN <= value <= INT64_MAX else None
