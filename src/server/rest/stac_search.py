"""Item search parameters of the STAC API (`/search` GET and POST, and a
collection's `/items`), read into the catalogue's `ItemQuery`. Anything
malformed is INVALID_ARGUMENT naming the parameter (HTTP 400), never a 500;
the range checks the catalogue makes itself (bbox order, time order, the
footprint's GeoJSON) stay there."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from geopera_kernel.server.domain.models import ItemQuery
from geopera_kernel.server.errors import invalid_argument
from geopera_kernel.server.pagination import MAX_PAGE_SIZE
from geopera_kernel.server.rest.query_numbers import whole_number

DEFAULT_LIMIT = 10
MAX_LIMIT = MAX_PAGE_SIZE
# STAC intervals include their end; the catalogue's end is exclusive. Timestamps
# are stored to the microsecond, so `<= end` is `< end + 1 µs`.
_ONE_TICK = timedelta(microseconds=1)
_MAX_LIST = 1000


@dataclass(frozen=True)
class StacSearch:
    collections: tuple[str, ...] = ()
    ids: tuple[str, ...] = ()
    bbox: tuple[float, float, float, float] | None = None
    datetime_start: datetime | None = None
    datetime_end: datetime | None = None  # exclusive
    intersects: dict[str, Any] | None = None
    limit: int = DEFAULT_LIMIT
    token: str = ""

    def query(self, project_ids: list[str]) -> ItemQuery:
        return ItemQuery(
            project_id="",
            collection_id=None,
            bbox=self.bbox,
            datetime_start=self.datetime_start,
            datetime_end=self.datetime_end,
            page_size=self.limit,
            page_token=self.token,
            intersects=self.intersects,
            project_ids=tuple(project_ids),
            item_ids=self.ids,
        )


def from_query_string(query: Mapping[str, str]) -> StacSearch:
    """GET parameters: lists comma-separated, `intersects` as GeoJSON text."""
    intersects = query.get("intersects")
    geometry = None
    if intersects is not None:
        try:
            geometry = json.loads(intersects)
        except (ValueError, RecursionError):
            raise invalid_argument("INVALID_INTERSECTS", "intersects is not GeoJSON", field="intersects") from None
    return _search(
        collections=_split(query.get("collections"), "collections"),
        ids=_split(query.get("ids"), "ids"),
        bbox=query["bbox"].split(",") if "bbox" in query else None,
        datetime_text=query.get("datetime"),
        intersects=geometry,
        limit=query.get("limit"),
        token=query.get("token"),
    )


def from_body(body: object) -> StacSearch:
    """A POST body: a JSON object with lists as JSON arrays."""
    if not isinstance(body, dict):
        raise invalid_argument("INVALID_SEARCH", "the body must be a JSON object of search parameters", field="body")
    return _search(
        collections=_strings(body.get("collections"), "collections"),
        ids=_strings(body.get("ids"), "ids"),
        bbox=body.get("bbox"),
        datetime_text=body.get("datetime"),
        intersects=body.get("intersects"),
        limit=body.get("limit"),
        token=body.get("token"),
    )


def _search(
    *,
    collections: tuple[str, ...],
    ids: tuple[str, ...],
    bbox: object,
    datetime_text: object,
    intersects: object,
    limit: object,
    token: object,
) -> StacSearch:
    if intersects is not None and not isinstance(intersects, dict):
        raise invalid_argument("INVALID_INTERSECTS", "intersects must be a GeoJSON geometry object", field="intersects")
    if intersects is not None and bbox is not None:
        raise invalid_argument(
            "INVALID_SEARCH", "bbox and intersects cannot be used together (STAC API item search)", field="intersects"
        )
    if token is not None and not isinstance(token, str):
        raise invalid_argument("INVALID_PAGE_TOKEN", "token must be a string", field="token")
    start, end = parse_interval(datetime_text) if datetime_text is not None else (None, None)
    return StacSearch(
        collections=collections,
        ids=ids,
        bbox=parse_bbox(bbox) if bbox is not None else None,
        datetime_start=start,
        datetime_end=end,
        intersects=intersects,
        limit=parse_limit(limit),
        token=token or "",
    )


def _split(text: str | None, name: str) -> tuple[str, ...]:
    if text is None:
        return ()
    return _strings([part.strip() for part in text.split(",") if part.strip()], name)


def _strings(value: object, name: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, list) and len(value) <= _MAX_LIST and all(isinstance(v, str) and v for v in value):
        return tuple(value)
    raise invalid_argument(
        f"INVALID_{name.upper()}", f"{name} must be a list of at most {_MAX_LIST} non-empty strings", field=name
    )


def parse_bbox(value: object) -> tuple[float, float, float, float]:
    """[west, south, east, north] or, in 3D, [west, south, min z, east, north, max z]."""
    numbers: list[float] = []
    if isinstance(value, list | tuple):
        for part in value:
            try:
                number = float(part) if isinstance(part, int | float | str) and not isinstance(part, bool) else math.nan
            except (ValueError, OverflowError):  # not a number; an integer past a double
                number = math.nan
            numbers.append(number)
    if len(numbers) not in (4, 6) or not all(math.isfinite(n) for n in numbers):
        raise invalid_argument(
            "INVALID_BBOX", "bbox must be 4 (or, in 3D, 6) numbers: west, south, east, north", field="bbox"
        )
    if len(numbers) == 6:
        return numbers[0], numbers[1], numbers[3], numbers[4]
    return numbers[0], numbers[1], numbers[2], numbers[3]


def parse_limit(value: object) -> int:
    """1..; above the maximum, the maximum (OGC API Features)."""
    if value is None:
        return DEFAULT_LIMIT
    if isinstance(value, str):
        value = whole_number(value.strip())
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return min(value, MAX_LIMIT)
    raise invalid_argument("INVALID_LIMIT", "limit must be a whole number of at least 1", field="limit")


def parse_interval(value: object) -> tuple[datetime | None, datetime | None]:
    """An RFC 3339 instant, or an interval `start/end` with `..` (or nothing) for
    an open end; returns the catalogue's [start, end) range."""
    if not isinstance(value, str):
        raise invalid_argument("INVALID_DATETIME", "datetime must be an RFC 3339 string", field="datetime")
    parts = value.split("/")
    if len(parts) == 1:
        moment = _instant(parts[0])
        return moment, _after(moment)
    if len(parts) != 2:
        raise invalid_argument("INVALID_DATETIME", "datetime is an instant or one interval start/end", field="datetime")
    start, end = (None if part in ("", "..") else _instant(part) for part in parts)
    if start is None and end is None:
        raise invalid_argument("INVALID_DATETIME", "an interval needs at least one end", field="datetime")
    if start is not None and end is not None and start > end:
        raise invalid_argument("INVALID_DATETIME", "the interval's start is after its end", field="datetime")
    return start, _after(end) if end is not None else None


def _instant(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.upper())
    except ValueError:
        moment = None
    if moment is None or "T" not in text.upper():
        raise invalid_argument(
            "INVALID_DATETIME",
            f"{text[:40]!r} is not an RFC 3339 date-time (e.g. 2015-07-11T10:00:00Z)",
            field="datetime",
        )
    # RFC 3339 always has an offset; without one, read UTC rather than the server's zone.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _after(moment: datetime) -> datetime:
    try:
        return moment + _ONE_TICK
    except OverflowError:
        raise invalid_argument("INVALID_DATETIME", "datetime is out of range", field="datetime") from None
