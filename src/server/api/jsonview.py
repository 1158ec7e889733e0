"""The JSON view of params and results, shared by the HTTP/JSON projection and
MCP (gRPC keeps the protobuf wire form), and by the Python SDK's `to_json`, which
answers the same JSON for the same result. Written once, as the server's
`server/api/jsonview.py`; the SDK's `geopera_sdk/_jsonview.py` is a copy made by
`scripts/gen_jsonview.py` (`make check-generated` holds them equal).

- Job statuses are the words the product docs use (`pending`, `dispatched`,
  `running`, `succeeded`, `failed`, `cancelled`); params accept the word or the
  enum name (`JOB_STATUS_RUNNING`), as proto3 JSON does.
- An analytics result travels as a `Struct`, where every number is a double
  and key order is lost. `shape` gives it back the types and the order of the
  method's output schema: a number the schema types `integer` is an integer,
  an object's keys follow the schema's `propertyOrdering` (the published
  schemas carry it: a Struct does not keep the order of `properties`), else
  its `properties`, and keys the schema does not list come after them,
  sorted (so two calls answer the same text).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from geopera.v1 import analytics_pb2, resources_pb2

JOB_STATUS_ENUM = "geopera.v1.JobStatus"
_PREFIX = "JOB_STATUS_"
# JOB_STATUS_UNSPECIFIED has no word: a job never carries it.
JOB_STATUS_WORDS: dict[str, str] = {
    value.name: value.name.removeprefix(_PREFIX).lower()
    for value in resources_pb2.JobStatus.DESCRIPTOR.values
    if value.number != resources_pb2.JOB_STATUS_UNSPECIFIED
}
_WORD_NAMES = {word: name for name, word in JOB_STATUS_WORDS.items()}
# Doubles hold every integer up to 2**53 exactly; beyond it "integer" is not a promise we can keep.
_MAX_EXACT = 2**53


def job_status_word(number: int) -> str:
    """`resources_pb2.JOB_STATUS_RUNNING` -> `"running"`."""
    name = resources_pb2.JobStatus.Name(resources_pb2.JobStatus.ValueType(number))
    return JOB_STATUS_WORDS.get(name, name)


def _enum_of(field: FieldDescriptor) -> str:
    """The full name of an enum field's type (always set on an enum field)."""
    return field.enum_type.full_name if field.enum_type is not None else ""


def _message_of(field: FieldDescriptor) -> Descriptor:
    """A message field's type (always set on a message field)."""
    assert field.message_type is not None
    return field.message_type


def _descriptor(message: Message) -> Descriptor:
    """The stubs type DESCRIPTOR as this or upb's class, a `Descriptor` at run time."""
    descriptor = message.DESCRIPTOR
    assert isinstance(descriptor, Descriptor)
    return descriptor


def _reaches(descriptor: Descriptor, visiting: frozenset[str]) -> bool:
    if descriptor.full_name in visiting:
        return False  # a cycle: its fields are being checked further up
    inner = visiting | {descriptor.full_name}
    for field in descriptor.fields:
        if field.type == FieldDescriptor.TYPE_ENUM and _enum_of(field) == JOB_STATUS_ENUM:
            return True
        if (
            field.type == FieldDescriptor.TYPE_MESSAGE
            and not _message_of(field).full_name.startswith("google.")
            and _reaches(_message_of(field), inner)
        ):
            return True
    return False


@functools.cache
def _reaches_job_status(descriptor: Descriptor) -> bool:
    """Whether a message (transitively) has a JobStatus field: the walk skips the rest."""
    return _reaches(descriptor, frozenset())


def _field_reaches(field: FieldDescriptor) -> bool:
    if field.type == FieldDescriptor.TYPE_ENUM:
        return _enum_of(field) == JOB_STATUS_ENUM
    if field.type == FieldDescriptor.TYPE_MESSAGE and not _message_of(field).full_name.startswith("google."):
        return _reaches_job_status(_message_of(field))
    return False


def _walk(node: Any, descriptor: Descriptor, rewrite: Callable[[Any], Any]) -> None:
    """Rewrite every JobStatus value of the JSON object `node` of message
    `descriptor` in place. Values of the wrong JSON type are left for
    json_format to refuse."""
    if not isinstance(node, dict):
        return
    for field in descriptor.fields:
        if not _field_reaches(field):
            continue
        for key in (field.name, field.json_name):
            if key not in node:
                continue
            value = node[key]
            if field.type == FieldDescriptor.TYPE_ENUM:
                if field.is_repeated:
                    if isinstance(value, list):
                        node[key] = [rewrite(v) for v in value]
                else:
                    node[key] = rewrite(value)
            elif _message_of(field).GetOptions().map_entry:
                value_field = _message_of(field).fields_by_name["value"]
                if isinstance(value, dict):
                    for entry_key, entry in value.items():
                        if value_field.type == FieldDescriptor.TYPE_ENUM:
                            value[entry_key] = rewrite(entry)
                        else:
                            _walk(entry, _message_of(value_field), rewrite)
            elif field.is_repeated:
                if isinstance(value, list):
                    for entry in value:
                        _walk(entry, _message_of(field), rewrite)
            else:
                _walk(value, _message_of(field), rewrite)


def _to_word(value: Any) -> Any:
    return JOB_STATUS_WORDS.get(value, value) if isinstance(value, str) else value


def _to_name(value: Any) -> Any:
    return _WORD_NAMES.get(value, value) if isinstance(value, str) else value


SchemaLookup = Callable[[str], dict[str, Any] | None]


def to_json(
    message: Message,
    *,
    output_schema: dict[str, Any] | None = None,
    analytics_schema: SchemaLookup | None = None,
) -> dict[str, Any]:
    """A message as the JSON the HTTP projection and MCP answer for it: proto3
    JSON with the .proto field names, job statuses as words, and an
    `AnalyticsExecuteResult`'s result in its method's types and key order. The
    method's output schema is `output_schema` when the caller has it (e.g. from
    the SDK's `client.analytics.output_schema`), else `analytics_schema(name)`
    (None when the method is unknown)."""
    body = json_format.MessageToDict(message, preserving_proto_field_name=True)
    if _reaches_job_status(_descriptor(message)):
        _walk(body, _descriptor(message), _to_word)
    if isinstance(message, analytics_pb2.AnalyticsExecuteResult) and "result" in body:
        schema = output_schema
        if schema is None and analytics_schema is not None:
            schema = analytics_schema(message.operation)
        if schema is not None:
            body["result"] = shape(body["result"], schema)
    return body


def parse_params(body: dict[str, Any], message: Message) -> Message:
    """ParseDict, with job statuses given as words too. Raises json_format's errors."""
    if _reaches_job_status(_descriptor(message)):
        _walk(body, _descriptor(message), _to_name)
    return json_format.ParseDict(body, message)


# -- analytics results ------------------------------------------------------------


def _resolve(schema: Any, root: dict[str, Any]) -> dict[str, Any]:
    """Follow local `$ref`s (`#/$defs/X`); anything else is an open schema."""
    seen = 0
    while isinstance(schema, dict) and isinstance(schema.get("$ref"), str) and seen < 32:
        target: Any = root
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target.get(part) if isinstance(target, dict) else None
        schema, seen = target, seen + 1
    return schema if isinstance(schema, dict) else {}


def _types(schema: dict[str, Any]) -> set[str]:
    kind = schema.get("type")
    if isinstance(kind, str):
        return {kind}
    if isinstance(kind, list):
        return {k for k in kind if isinstance(k, str)}
    if "properties" in schema or "additionalProperties" in schema:
        return {"object"}
    if "items" in schema or "prefixItems" in schema:
        return {"array"}
    return set()


def _json_type(value: Any) -> set[str]:
    if value is None:
        return {"null"}
    if isinstance(value, bool):
        return {"boolean"}
    if isinstance(value, int | float):
        whole = isinstance(value, int) or (value == value and abs(value) <= _MAX_EXACT and float(value).is_integer())
        return {"number", "integer"} if whole else {"number"}
    if isinstance(value, str):
        return {"string"}
    if isinstance(value, list):
        return {"array"}
    return {"object"}


def _branch(value: Any, schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    """The first `anyOf`/`oneOf` branch the value fits (pydantic's order)."""
    branches = schema.get("anyOf") or schema.get("oneOf")
    if not isinstance(branches, list):
        return schema
    fits = _json_type(value)
    for branch in branches:
        resolved = _resolve(branch, root)
        if _types(resolved) & fits:
            return resolved
    return {}


def shape(value: Any, schema: dict[str, Any], root: dict[str, Any] | None = None) -> Any:
    """`value` (plain JSON, numbers as floats) in the types and key order of
    the JSON Schema `schema`. Only integral numbers the schema types `integer`
    (and not also `number`) change type; nothing is dropped or added."""
    root = schema if root is None else root
    schema = _branch(value, _resolve(schema, root), root)
    if isinstance(value, float) and not isinstance(value, bool):
        kinds = _types(schema)
        if "integer" in kinds and "number" not in kinds and "integer" in _json_type(value):
            return int(value)
        return value
    if isinstance(value, dict):
        declared = schema.get("properties")
        properties: dict[str, Any] = declared if isinstance(declared, dict) else {}
        extra = schema.get("additionalProperties")
        extra = extra if isinstance(extra, dict) else {}
        order = schema.get("propertyOrdering")
        names = [k for k in order if isinstance(k, str)] if isinstance(order, list) else []
        names += [k for k in properties if k not in names]
        shaped = {key: shape(value[key], properties.get(key, extra), root) for key in names if key in value}
        for key in sorted(k for k in value if k not in shaped):
            shaped[key] = shape(value[key], extra, root)
        return shaped
    if isinstance(value, list):
        items = schema.get("items")
        return [shape(v, items if isinstance(items, dict) else {}, root) for v in value]
    return value


_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
_SCHEMA_ONE = ("items", "additionalProperties", "not", "contains", "if", "then", "else", "propertyNames")
_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")


def with_property_ordering(schema: Any) -> Any:
    """A JSON Schema with `propertyOrdering` (the names of `properties`, in
    order) on every object schema that lists properties: a schema sent as a
    Struct loses the order of its keys, and clients shape results with it.
    Only subschemas are visited (a property may be named `properties`)."""
    if not isinstance(schema, dict):
        return schema
    copied = dict(schema)
    for key in _SCHEMA_MAPS:
        if isinstance(schema.get(key), dict):
            copied[key] = {name: with_property_ordering(sub) for name, sub in schema[key].items()}
    for key in _SCHEMA_ONE:
        if isinstance(schema.get(key), dict):
            copied[key] = with_property_ordering(schema[key])
    for key in _SCHEMA_LISTS:
        if isinstance(schema.get(key), list):
            copied[key] = [with_property_ordering(sub) for sub in schema[key]]
    properties = schema.get("properties")
    if isinstance(properties, dict) and properties and "propertyOrdering" not in schema:
        copied["propertyOrdering"] = list(properties)
    return copied
