"""Domain records <-> protobuf messages. No behaviour lives here."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from geopera.v1 import resources_pb2
from google.protobuf import json_format, struct_pb2, timestamp_pb2

from server.domain.credits import Balance, LedgerRow
from server.domain.models import AssetRecord, ItemRecord, ProjectRecord
from server.errors import invalid_argument

LEDGER_KINDS = {
    "grant": resources_pb2.LEDGER_ENTRY_KIND_GRANT,
    "reserve": resources_pb2.LEDGER_ENTRY_KIND_RESERVE,
    "capture": resources_pb2.LEDGER_ENTRY_KIND_CAPTURE,
    "release": resources_pb2.LEDGER_ENTRY_KIND_RELEASE,
}


def timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value)
    return ts


def from_timestamp(value: timestamp_pb2.Timestamp, present: bool) -> datetime | None:
    """The datetime of a Timestamp field, or None when the field is unset."""
    return value.ToDatetime(tzinfo=UTC) if present else None


def struct(value: dict[str, Any] | None) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    if value:
        message.update(value)
    return message


def struct_to_dict(value: struct_pb2.Struct) -> dict[str, Any]:
    return json_format.MessageToDict(value)


def project(record: ProjectRecord) -> resources_pb2.Project:
    return resources_pb2.Project(
        id=record.id, display_name=record.display_name, create_time=timestamp(record.create_time)
    )


def asset(record: AssetRecord, item_id: str) -> resources_pb2.Asset:
    message = resources_pb2.Asset(
        key=record.key,
        href=f"items/{item_id}/assets/{record.key}",
        media_type=record.media_type,
        title=record.title,
        roles=record.roles,
        size_bytes=record.size_bytes,
        sha256=record.sha256,
    )
    for band in record.bands:
        json_format.ParseDict(band, message.bands.add())
    json_format.ParseDict(record.grid, message.grid)
    json_format.ParseDict(record.render, message.render)
    return message


def item(record: ItemRecord) -> resources_pb2.Item:
    message = resources_pb2.Item(
        id=record.id,
        project_id=record.project_id,
        collection_id=record.collection_id,
        name=record.name,
        geometry=struct(record.geometry),
        bbox=record.bbox,
        datetime=timestamp(record.datetime),
        properties=struct(record.properties),
        create_time=timestamp(record.create_time),
        job_id=record.job_id,
        source_item_ids=record.source_item_ids,
    )
    for asset_record in record.assets:
        message.assets[asset_record.key].CopyFrom(asset(asset_record, record.id))
    return message


def balance(record: Balance) -> resources_pb2.CreditBalance:
    return resources_pb2.CreditBalance(
        project_id=record.project_id,
        available=record.available,
        held=record.held,
        captured_total=record.captured_total,
        granted_total=record.granted_total,
    )


def ledger_entry(row: LedgerRow) -> resources_pb2.LedgerEntry:
    return resources_pb2.LedgerEntry(
        id=row.id,
        project_id=row.project_id,
        job_id=row.job_id or "",
        kind=LEDGER_KINDS[row.kind],
        amount=row.amount,
        available_after=row.available_after,
        held_after=row.held_after,
        create_time=timestamp(row.create_time),
        note=row.note,
    )


def bbox_param(values: list[float], field: str = "bbox") -> tuple[float, float, float, float] | None:
    if not values:
        return None
    if len(values) != 4:
        raise invalid_argument("INVALID_BBOX", "bbox must have exactly 4 numbers", field=field)
    west, south, east, north = values
    return (west, south, east, north)
