"""Operation names -> message types, and Python values -> protobuf values."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from typing import Any

from google.protobuf import json_format, struct_pb2, symbol_database, timestamp_pb2
from google.protobuf.message import Message

# Importing the generated modules registers every params/result message in the
# default symbol database.
from geopera.v1 import (  # noqa: F401
    analytics_pb2,
    catalog_pb2,
    credits_pb2,
    errors_pb2,
    kernel_pb2,
    processing_pb2,
    resources_pb2,
)
from geopera_sdk._operations import OPERATIONS

PACKAGE = "geopera.v1"


def takes_idempotency_key(operation: str) -> bool:
    """Spends and writes that honour `idempotency-key` (e.g. analytics.execute):
    every call of them gets a key, which its retries reuse."""
    declared = OPERATIONS.get(operation)
    return declared is not None and declared.idempotency_key


def is_safe_to_repeat(operation: str) -> bool:
    """Reads, keyed calls and repeatable writes. Unknown operations are treated
    as writes: retried only when the server did not process them."""
    declared = OPERATIONS.get(operation)
    if declared is None:
        return False
    return declared.side_effect == "read" or declared.idempotency_key or declared.repeatable


def message_base_name(operation: str) -> str:
    """`clip.create_from_item` -> `ClipCreateFromItem` (the contract's naming rule)."""
    return "".join(part.capitalize() for part in re.split(r"[._]", operation))


def _symbol(full_name: str) -> type[Message]:
    try:
        return symbol_database.Default().GetSymbol(full_name)
    except KeyError:
        raise LookupError(f"{full_name} is not known to the installed geopera-api stubs; upgrade geopera-api") from None


def params_type(operation: str) -> type[Message]:
    """The params message class of an operation, e.g. `items.list` -> `ItemsListParams`."""
    return _symbol(f"{PACKAGE}.{message_base_name(operation)}Params")


def result_type(operation: str) -> type[Message]:
    """The result message class of an operation, e.g. `items.list` -> `ItemsListResult`."""
    return _symbol(f"{PACKAGE}.{message_base_name(operation)}Result")


def to_params(operation: str, params: Message | Mapping[str, Any] | None) -> Message:
    """A params message as given, or built from a dict (proto3 JSON field names)."""
    if isinstance(params, Message):
        return params
    message = params_type(operation)()
    if params:
        json_format.ParseDict(_jsonable(params), message)
    return message


def _jsonable(value: Any) -> Any:
    """Datetimes become RFC 3339 strings so ParseDict accepts them for Timestamps."""
    if isinstance(value, Mapping):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dt.datetime):
        return to_timestamp(value).ToJsonString()
    if isinstance(value, Message):
        return json_format.MessageToDict(value)
    return value


def to_struct(value: Mapping[str, Any] | struct_pb2.Struct | None) -> struct_pb2.Struct:
    if isinstance(value, struct_pb2.Struct):
        return value
    message = struct_pb2.Struct()
    if value:
        message.update(_jsonable(dict(value)))
    return message


def struct_to_dict(value: struct_pb2.Struct) -> dict[str, Any]:
    return json_format.MessageToDict(value)


def to_timestamp(value: dt.datetime | str | timestamp_pb2.Timestamp) -> timestamp_pb2.Timestamp:
    """An aware datetime (naive ones are taken as UTC), an RFC 3339 string, or a Timestamp."""
    if isinstance(value, timestamp_pb2.Timestamp):
        return value
    message = timestamp_pb2.Timestamp()
    if isinstance(value, str):
        message.FromJsonString(value)
        return message
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    message.FromDatetime(value)
    return message


_STATUS_NAMES = {v.number: v.name.removeprefix("JOB_STATUS_") for v in resources_pb2.JobStatus.DESCRIPTOR.values}
TERMINAL_STATUSES = frozenset(
    {resources_pb2.JOB_STATUS_SUCCEEDED, resources_pb2.JOB_STATUS_FAILED, resources_pb2.JOB_STATUS_CANCELLED}
)


def job_status(value: int | str) -> int:
    """`"running"`, `"RUNNING"`, `"JOB_STATUS_RUNNING"` or the enum number -> the enum number."""
    if isinstance(value, int):
        return value
    name = value.upper()
    if not name.startswith("JOB_STATUS_"):
        name = "JOB_STATUS_" + name
    try:
        return resources_pb2.JobStatus.Value(name)
    except ValueError:
        raise ValueError(f"unknown job status {value!r}; one of {sorted(_STATUS_NAMES.values())[1:]}") from None


def job_status_name(value: int) -> str:
    """The enum number -> `"RUNNING"`."""
    return _STATUS_NAMES.get(value, str(value))


def view_number(enum: Any, prefix: str, value: int | str | None) -> int:
    """`"full"`, `"FULL"`, `"ITEM_VIEW_FULL"` or the enum number -> the enum
    number of a view enum (`ItemView`, `JobView`); None -> unset (the list's
    default, BASIC)."""
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    name = value.upper()
    if not name.startswith(prefix):
        name = prefix + name
    try:
        return int(enum.Value(name))
    except ValueError:
        known = [n.removeprefix(prefix).lower() for n in enum.keys()][1:]
        raise ValueError(f"unknown view {value!r}; one of {known}") from None


def asset_input(value: catalog_pb2.AssetInput | Mapping[str, Any]) -> catalog_pb2.AssetInput:
    if isinstance(value, catalog_pb2.AssetInput):
        return value
    message = catalog_pb2.AssetInput()
    json_format.ParseDict(dict(value), message)
    return message


def strings(values: Iterable[str] | str | None) -> list[str]:
    if values is None:
        return []
    if isinstance(values, str):
        return [values]
    return list(values)
