"""Plain records the domain services return (the API layer maps them to protos)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from geopera_kernel.server.domain.rows import from_columns


@dataclass(frozen=True)
class ProjectRecord:
    id: str
    display_name: str
    create_time: datetime


@dataclass(frozen=True)
class ProjectExtent:
    """Where and when a project's items are: None throughout when it has none."""

    bbox: tuple[float, float, float, float] | None
    first_datetime: datetime | None
    last_datetime: datetime | None


@dataclass(frozen=True)
class AssetRecord:
    key: str
    storage_key: str
    media_type: str
    title: str
    roles: list[str]
    size_bytes: int
    sha256: str
    # JSON shaped like the proto messages Band / RasterGrid / RenderHint.
    bands: list[dict[str, Any]]
    grid: dict[str, Any]
    render: dict[str, Any]

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> AssetRecord:
        return from_columns(cls, row, roles=list(row["roles"]), size_bytes=int(row["size_bytes"]))


@dataclass(frozen=True)
class ItemFields:
    """What an item says of itself, whether about to be inserted (catalog.items.NewItem)
    or read back as stored (ItemRecord, which adds what storing it gave it)."""

    id: str
    project_id: str
    collection_id: str
    name: str
    geometry: dict[str, Any]
    bbox: tuple[float, float, float, float]
    datetime: datetime
    properties: dict[str, Any]


@dataclass(frozen=True)
class ItemRecord(ItemFields):
    create_time: datetime
    job_id: str
    assets: list[AssetRecord]
    source_item_ids: list[str] = field(default_factory=list)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> ItemRecord:
        return from_columns(
            cls,
            row,
            bbox=(row["bbox_west"], row["bbox_south"], row["bbox_east"], row["bbox_north"]),
            job_id=row["job_id"] or "",
            assets=[AssetRecord.from_json(a) for a in row["assets"]],
            source_item_ids=list(row.get("source_item_ids") or []),
        )


@dataclass(frozen=True)
class UploadRecord:
    id: str
    size_bytes: int
    sha256: str
    expire_time: datetime


@dataclass(frozen=True)
class UploadPart:
    """One message of an upload stream, as the API layer hands it over."""

    project_id: str
    file_name: str
    total_size: int
    sha256: str
    write_offset: int
    data: bytes
    finish_write: bool


@dataclass(frozen=True)
class AssetInput:
    key: str
    upload_id: str
    server_href: str
    roles: list[str]
    title: str


@dataclass(frozen=True)
class ItemCreate:
    project_id: str
    collection_id: str
    name: str
    datetime: datetime | None
    properties: dict[str, Any]
    assets: list[AssetInput]
    convert_to_cog: bool


@dataclass(frozen=True)
class ItemQuery:
    project_id: str
    collection_id: str | None
    bbox: tuple[float, float, float, float] | None
    datetime_start: datetime | None
    datetime_end: datetime | None
    page_size: int
    page_token: str
    # GeoJSON the footprint must intersect (validated by the service).
    intersects: dict[str, Any] | None = None
    # Several projects searched at once (the STAC API's collections); just
    # `project_id` when empty. Every one must be the caller's.
    project_ids: tuple[str, ...] = ()
    # Only items with these ids (the STAC API's `ids`); any item when empty.
    item_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class FileRef:
    """A stored file a caller may download."""

    storage_key: str
    media_type: str
    size_bytes: int
    sha256: str
