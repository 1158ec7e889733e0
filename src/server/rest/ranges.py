"""HTTP byte ranges and conditional requests for a stored file (RFC 9110
sections 13 and 14), as plain functions of the request headers, the file's
size and its entity tag.

`plan_response` says what to answer: 304 (`If-None-Match` matched), 412
(`If-Match` failed), 416 (no range satisfiable), 206 with one or several
ranges, or 200 with the whole file. A `Range` header that does not parse, or
one of another unit, is ignored (the whole file), as RFC 9110 asks; an
`If-Range` that does not match the current entity tag (a date included: no
`Last-Modified` is served) also gets the whole file, so a client never mixes
bytes of two versions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from geopera_kernel.server.rest.query_numbers import is_whole_number, whole_number

# More ranges than this in one request are refused (416), as RFC 9110 allows
# for a request of many small ranges: each costs a seek and a part header.
MAX_RANGES = 64
_MAX_HEADER_CHARS = 8192


@dataclass(frozen=True)
class ByteRange:
    """Bytes `start` .. `end`, both included."""

    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.end}/{size}"


@dataclass(frozen=True)
class Plan:
    status: int  # 200, 206, 304, 412 or 416
    ranges: tuple[ByteRange, ...] = ()


def _number(digits: str) -> int:
    """Checked digits as an int: `whole_number`, since a client may send more digits
    than int() reads."""
    value = whole_number(digits)
    assert value is not None
    return value


def parse_range(header: str, size: int) -> tuple[ByteRange, ...] | None:
    """The satisfiable ranges of a `Range` header, in the order asked (empty:
    none is satisfiable, 416); None when the header is to be ignored (invalid,
    another unit)."""
    unit, eq, spec = header.partition("=")
    if not eq or unit.strip().lower() != "bytes" or len(header) > _MAX_HEADER_CHARS:
        return None
    ranges: list[ByteRange] = []
    parts = [part.strip() for part in spec.split(",")]
    parts = [part for part in parts if part]  # RFC 9110 allows empty list elements
    if not parts:
        return None
    for part in parts:
        first, dash, last = part.partition("-")
        first, last = first.strip(), last.strip()
        if not dash or not (first or last) or not all(is_whole_number(n) for n in (first, last) if n):
            return None
        if not first:  # suffix: the last N bytes
            suffix = _number(last)
            if suffix > 0 and size > 0:
                ranges.append(ByteRange(max(0, size - suffix), size - 1))
            continue
        start = _number(first)
        end = _number(last) if last else size - 1
        if last and end < start:
            return None  # invalid: the whole header is ignored
        if start < size:
            ranges.append(ByteRange(start, min(end, size - 1)))
    return tuple(ranges)


def _tags(header: str) -> list[str]:
    return [tag.strip() for tag in header.split(",") if tag.strip()]


def _weak_match(header: str, etag: str) -> bool:
    """`If-None-Match`: weak comparison (W/ prefixes ignored), `*` matches."""
    strip = etag.removeprefix("W/")
    return any(tag == "*" or tag.removeprefix("W/") == strip for tag in _tags(header))


def _strong_match(header: str, etag: str) -> bool:
    """`If-Match`: strong comparison, `*` matches an existing file."""
    return any(tag == "*" or (tag == etag and not tag.startswith("W/")) for tag in _tags(header))


def plan_response(headers: Mapping[str, str], size: int, etag: str) -> Plan:
    if_match = headers.get("If-Match")
    if if_match is not None and not _strong_match(if_match, etag):
        return Plan(412)
    if_none_match = headers.get("If-None-Match")
    if if_none_match is not None and _weak_match(if_none_match, etag):
        return Plan(304)
    header = headers.get("Range")
    if header is None:
        return Plan(200)
    if_range = headers.get("If-Range")
    if if_range is not None and if_range.strip() != etag:
        return Plan(200)
    ranges = parse_range(header, size)
    if ranges is None:
        return Plan(200)
    if not ranges or len(ranges) > MAX_RANGES:
        return Plan(416)
    return Plan(206, ranges)
