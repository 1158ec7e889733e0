"""Domain records <-> protobuf messages: the conversions, the checks of the
request values they parse (timestamp range, bbox length), and a bounded cache of
converted items (items never change, and converting one is costly)."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from google.protobuf import json_format, struct_pb2, timestamp_pb2
from google.protobuf.message import Message

from geopera.v1 import kernel_pb2, resources_pb2
from geopera_kernel.server import callstats
from geopera_kernel.server.domain.credits import Balance, LedgerRow
from geopera_kernel.server.domain.jobs import (
    STATUSES,
    Dispatch,
    JobEvent,
    JobLogEntry,
    JobLogEvent,
    JobRecord,
    JobTypeRecord,
    WorkerRecord,
)
from geopera_kernel.server.domain.jobs.pricing import Estimate
from geopera_kernel.server.domain.jobs.watch_set import JobSet
from geopera_kernel.server.domain.models import AssetRecord, ItemRecord, ProjectRecord
from geopera_kernel.server.edge.status import status_proto
from geopera_kernel.server.errors import Code, DomainError, invalid_argument

LEDGER_KINDS = {
    "grant": resources_pb2.LEDGER_ENTRY_KIND_GRANT,
    "reserve": resources_pb2.LEDGER_ENTRY_KIND_RESERVE,
    "capture": resources_pb2.LEDGER_ENTRY_KIND_CAPTURE,
    "release": resources_pb2.LEDGER_ENTRY_KIND_RELEASE,
    "waive": resources_pb2.LEDGER_ENTRY_KIND_WAIVE,
}


def timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value)
    return ts


# google.protobuf.Timestamp's own range: 0001-01-01T00:00:00Z .. 9999-12-31T23:59:59.999999999Z.
_TIMESTAMP_SECONDS = (-62_135_596_800, 253_402_300_799)


def from_timestamp(value: timestamp_pb2.Timestamp, present: bool, *, field: str) -> datetime | None:
    """The datetime of a Timestamp field, or None when the field is unset.
    Values outside the Timestamp range are the client's error (INVALID_TIMESTAMP)."""
    if not present:
        return None
    low, high = _TIMESTAMP_SECONDS
    if not (low <= value.seconds <= high and 0 <= value.nanos <= 999_999_999):
        raise invalid_argument(
            "INVALID_TIMESTAMP",
            f"{field} must be between 0001-01-01T00:00:00Z and 9999-12-31T23:59:59.999999999Z"
            " with nanos in 0..999999999",
            field=field,
        )
    return value.ToDatetime(tzinfo=UTC)


def struct(value: dict[str, Any] | None) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    if value:
        message.update(value)
    return message


def struct_to_dict(value: struct_pb2.Struct) -> dict[str, Any]:
    """A Struct as plain Python. Unlike json_format this keeps NaN and infinity
    (numbers a client can send), leaving it to validation to refuse them."""
    return {key: _value(item) for key, item in value.fields.items()}


def _value(value: struct_pb2.Value) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        return value.number_value
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        return struct_to_dict(value.struct_value)
    if kind == "list_value":
        return [_value(item) for item in value.list_value.values]
    return None


M = TypeVar("M", bound=Message)
_PACKERS: dict[str, Callable[[Any], Any]] = {
    "google.protobuf.Timestamp": timestamp,
    "google.protobuf.Struct": struct,
}


@functools.cache
def _shared_fields(message: type[Message], record: type) -> tuple[tuple[str, Callable[[Any], Any] | None], ...]:
    """The fields a message and a record dataclass both name, each with how its value is packed."""
    names = {f.name for f in dataclasses.fields(record)}
    shared: list[tuple[str, Callable[[Any], Any] | None]] = []
    for field in message.DESCRIPTOR.fields:
        if field.name not in names:
            continue
        if field.message_type is None and field.enum_type is None:
            shared.append((field.name, None))
        elif field.message_type and field.message_type.full_name in _PACKERS and not field.is_repeated:
            shared.append((field.name, _PACKERS[field.message_type.full_name]))
        else:  # an enum or another message: only the caller knows how its value maps
            shared.append((field.name, _must_be_given(message, field.name)))
    return tuple(shared)


def _must_be_given(message: type[Message], name: str) -> Callable[[Any], Any]:
    def pack(value: Any) -> Any:
        raise TypeError(f"{message.__name__}.{name} is an enum or a message: pass its value to mirror()")

    return pack


def mirror(message: type[M], record: Any, **given: Any) -> M:
    """`message` filled from the record dataclass's fields of the same names (datetimes as
    Timestamps, dicts as Structs), and from `given` for the fields it converts or names
    otherwise. The records mirror the resources of the proto, so the lists of fields are
    written once (in the proto and the record), not a third time here."""
    values = dict(given)
    classes: tuple[type, type] = (message, type(record))  # hashable; the TypeVar hides it from the cache
    for name, pack in _shared_fields(*classes):
        if name not in given:
            value = getattr(record, name)
            values[name] = value if pack is None else pack(value)
    return message(**values)


def project(record: ProjectRecord) -> resources_pb2.Project:
    return mirror(resources_pb2.Project, record)


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


_ITEM_BYTES: OrderedDict[str, bytes] = OrderedDict()
_ITEM_BYTES_CAPACITY = 4096


def item(record: ItemRecord) -> resources_pb2.Item:
    """Items are immutable, so their (costly) conversion is cached by id."""
    cached = _ITEM_BYTES.get(record.id)
    callstats.cache_lookup("item_proto", cached is not None)
    if cached is not None:
        _ITEM_BYTES.move_to_end(record.id)
        return resources_pb2.Item.FromString(cached)
    message = _item(record)
    _ITEM_BYTES[record.id] = message.SerializeToString()
    if len(_ITEM_BYTES) > _ITEM_BYTES_CAPACITY:
        _ITEM_BYTES.popitem(last=False)
    return message


# Names the encoding `item_bytes` produces, for the renders the catalog stores
# (see CatalogService.get_item_rendered): resources.proto's schema, which renames
# it by itself when it changes, and this number: bump it whenever `_item` or
# `asset` change what they build, so renders written before are not served.
ITEM_ENCODING_VERSION = 1
ITEM_RENDER_KEY = (
    f"item-v{ITEM_ENCODING_VERSION}-{hashlib.sha256(resources_pb2.DESCRIPTOR.serialized_pb).hexdigest()[:16]}"
)


def item_bytes(record: ItemRecord) -> bytes:
    """The serialized Item of a record (deterministic: map entries in key order)."""
    return _item(record).SerializeToString(deterministic=True)


def _item(record: ItemRecord) -> resources_pb2.Item:
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


def item_basic(record: ItemRecord) -> resources_pb2.Item:
    """`ITEM_VIEW_BASIC` (catalog.proto): what a listing is read for, without
    the footprint, properties and band statistics that make up most of an item."""
    message = resources_pb2.Item(
        id=record.id,
        project_id=record.project_id,
        collection_id=record.collection_id,
        name=record.name,
        bbox=record.bbox,
        datetime=timestamp(record.datetime),
        create_time=timestamp(record.create_time),
        job_id=record.job_id,
    )
    for a in record.assets:
        message.assets[a.key].CopyFrom(
            resources_pb2.Asset(
                key=a.key, href=f"items/{record.id}/assets/{a.key}", media_type=a.media_type, title=a.title,
                roles=a.roles,
            )
        )  # fmt: skip
    return message


def balance(record: Balance) -> resources_pb2.CreditBalance:
    return mirror(resources_pb2.CreditBalance, record)


def ledger_entry(row: LedgerRow) -> resources_pb2.LedgerEntry:
    return mirror(resources_pb2.LedgerEntry, row, job_id=row.job_id or "", kind=LEDGER_KINDS[row.kind])


def bbox_param(values: list[float], field: str = "bbox") -> tuple[float, float, float, float] | None:
    if not values:
        return None
    if len(values) != 4:
        raise invalid_argument("INVALID_BBOX", "bbox must have exactly 4 numbers", field=field)
    west, south, east, north = values
    return (west, south, east, north)


JOB_STATUS = {name: getattr(resources_pb2, f"JOB_STATUS_{name}") for name in STATUSES}
JOB_STATUS_NAMES = {value: name for name, value in JOB_STATUS.items()}


def artifact(stored: dict[str, Any]) -> resources_pb2.Artifact:
    """A stored artifact (id, key, media_type, size_bytes, sha256, title) with its download name."""
    return resources_pb2.Artifact(
        id=stored["id"], key=stored["key"], href=f"artifacts/{stored['id']}", media_type=stored["media_type"],
        size_bytes=stored["size_bytes"], sha256=stored["sha256"], title=stored["title"],
    )  # fmt: skip


def job(record: JobRecord, *, full: bool = True) -> resources_pb2.Job:
    """A job; `full=False` is `JOB_VIEW_BASIC` (processing.proto): no `input_params`."""
    message = mirror(
        resources_pb2.Job,
        record,
        status=JOB_STATUS[record.status],
        input_params=struct(record.input_params) if full else None,
        error=None,  # set below, as a google.rpc.Status
        output_artifacts=[artifact(a) for a in record.output_artifacts],
    )
    if record.error is not None:
        message.error.CopyFrom(
            status_proto(DomainError(Code(record.error.code), record.error.reason, record.error.message))
        )
    return message


def job_set(request: kernel_pb2.WatchJobsRequest) -> JobSet:
    """What a WatchJobs request follows (its status checked by JobSet.check)."""
    if request.status != resources_pb2.JOB_STATUS_UNSPECIFIED and request.status not in JOB_STATUS_NAMES:
        raise invalid_argument("INVALID_STATUS", f"unknown job status {request.status}", field="status")
    return JobSet(
        project_id=request.project_id,
        batch_id=request.batch_id,
        status=JOB_STATUS_NAMES.get(request.status),
        job_type_id=request.job_type_id or None,
        after_sequences=dict(request.after_sequences),
    )


def job_log_entry(entry: JobLogEntry) -> resources_pb2.JobLogEntry:
    return mirror(resources_pb2.JobLogEntry, entry, level=entry.level)  # stored as LogLevel's number


def watch_response(event: JobEvent | JobLogEvent) -> kernel_pb2.WatchJobResponse:
    """A job event (or log record) as WatchJob sends it (and the HTTP event stream, as JSON)."""
    if isinstance(event, JobLogEvent):
        return kernel_pb2.WatchJobResponse(
            sequence=event.sequence,
            event_time=timestamp(event.entry.log_time),
            event_type=event.event_type,
            log_entry=job_log_entry(event.entry),
        )
    return kernel_pb2.WatchJobResponse(
        sequence=event.sequence,
        event_time=timestamp(event.event_time),
        job=job(event.job),
        event_type=event.event_type,
    )


def estimate(price: Estimate) -> resources_pb2.CostEstimate:
    """A spend's CostEstimate (resources.proto): the cost model's breakdown
    (empty for a job priced at creation), the total and the balance after."""
    message = resources_pb2.CostEstimate(
        total_credits=price.total,
        available_credits=price.available,
        balance_after=price.available - (0 if price.already_reserved else price.total),
        already_reserved=price.already_reserved,
    )
    cost = price.cost
    if cost is not None:
        area_credits = cost.per_km2 * price.area_km2
        asset_credits = cost.per_asset * price.asset_count
        raw = cost.raw(price.area_km2, price.asset_count)
        message.MergeFrom(
            resources_pb2.CostEstimate(
                flat=cost.flat, per_km2=cost.per_km2, area_km2=price.area_km2, area_credits=area_credits,
                per_asset=cost.per_asset, asset_count=price.asset_count, asset_credits=asset_credits,
                raw_credits=raw, minimum=cost.minimum, minimum_applied=cost.minimum > cost.rounded_up(raw),
            )
        )  # fmt: skip
    return message


def dispatch(result: Dispatch | None) -> resources_pb2.DispatchResult | None:
    if result is None:
        return None
    return resources_pb2.DispatchResult(accepted=result.accepted, worker_id=result.worker_id, message=result.message)


def job_type(record: JobTypeRecord) -> resources_pb2.JobType:
    return mirror(
        resources_pb2.JobType, record, job_type_id=record.id, cost_model=mirror(resources_pb2.CostModel, record.cost)
    )


def worker(record: WorkerRecord) -> resources_pb2.Worker:
    return mirror(resources_pb2.Worker, record)
