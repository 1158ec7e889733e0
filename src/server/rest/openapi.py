"""An OpenAPI 3.1 document generated from the operation registry and the
protobuf descriptors of its params/result messages (proto3 JSON mapping with
the original snake_case field names)."""

from __future__ import annotations

from typing import Any

from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor

from geopera_kernel.server.api.jsonview import JOB_STATUS_ENUM, JOB_STATUS_WORDS
from geopera_kernel.server.api.registry import OperationRegistry
from geopera_kernel.server.api.wire import descriptor_of
from geopera_kernel.server.rest import downloads, stac_openapi, tiles_openapi
from geopera_kernel.server.rest.openapi_parts import error_response, path_param, query_param

_SCALARS: dict[int, dict[str, Any]] = {
    FieldDescriptor.TYPE_DOUBLE: {"type": "number"},
    FieldDescriptor.TYPE_FLOAT: {"type": "number"},
    FieldDescriptor.TYPE_INT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_SINT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_UINT32: {"type": "integer", "format": "int32", "minimum": 0},
    FieldDescriptor.TYPE_FIXED32: {"type": "integer", "format": "int32", "minimum": 0},
    # proto3 JSON writes 64-bit integers as strings and reads either form.
    FieldDescriptor.TYPE_INT64: {"type": ["string", "integer"], "format": "int64"},
    FieldDescriptor.TYPE_SINT64: {"type": ["string", "integer"], "format": "int64"},
    FieldDescriptor.TYPE_SFIXED64: {"type": ["string", "integer"], "format": "int64"},
    FieldDescriptor.TYPE_UINT64: {"type": ["string", "integer"], "format": "int64"},
    FieldDescriptor.TYPE_FIXED64: {"type": ["string", "integer"], "format": "int64"},
    FieldDescriptor.TYPE_BOOL: {"type": "boolean"},
    FieldDescriptor.TYPE_STRING: {"type": "string"},
    FieldDescriptor.TYPE_BYTES: {"type": "string", "contentEncoding": "base64"},
}
_WELL_KNOWN: dict[str, dict[str, Any]] = {
    "google.protobuf.Struct": {"type": "object", "additionalProperties": True},
    "google.protobuf.Value": {},
    "google.protobuf.ListValue": {"type": "array"},
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]+)?s$"},
    "google.protobuf.Any": {"type": "object", "properties": {"@type": {"type": "string"}}},
    "google.protobuf.Empty": {"type": "object"},
}


class _SchemaBuilder:
    def __init__(self) -> None:
        self.components: dict[str, dict[str, Any]] = {}

    def ref(self, descriptor: Descriptor) -> dict[str, Any]:
        if descriptor.full_name in _WELL_KNOWN:
            return dict(_WELL_KNOWN[descriptor.full_name])
        name = descriptor.full_name.replace(".", "_")
        if name not in self.components:
            self.components[name] = {}  # reserve first: messages may be recursive
            self.components[name] = self._message(descriptor)
        return {"$ref": f"#/components/schemas/{name}"}

    def _message(self, descriptor: Descriptor) -> dict[str, Any]:
        properties = {field.name: self._field(field) for field in descriptor.fields}
        return {"type": "object", "title": descriptor.name, "properties": properties, "additionalProperties": False}

    def _enum(self, descriptor: EnumDescriptor, field: FieldDescriptor) -> dict[str, Any]:
        if descriptor.full_name == JOB_STATUS_ENUM:
            # Answers carry the docs' words; params take the word or the enum name.
            words = list(JOB_STATUS_WORDS.values())
            if field.containing_type is not None and field.containing_type.name.endswith("Params"):
                return {
                    "type": "string",
                    "enum": [*words, *JOB_STATUS_WORDS],
                    "description": "A job status: the lower-case word (`running`) or the enum name"
                    " (`JOB_STATUS_RUNNING`).",
                }
            return {"type": "string", "enum": words, "description": "A job status, as a lower-case word."}
        return {"type": "string", "enum": [value.name for value in descriptor.values]}

    def _single(self, field: FieldDescriptor) -> dict[str, Any]:
        # (A message field always has its message_type, an enum field its enum_type.)
        if field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type is not None:
            return self.ref(field.message_type)
        if field.type == FieldDescriptor.TYPE_ENUM and field.enum_type is not None:
            return self._enum(field.enum_type, field)
        return dict(_SCALARS[field.type])

    def _field(self, field: FieldDescriptor) -> dict[str, Any]:
        message_type = field.message_type
        if message_type is not None and message_type.GetOptions().map_entry:  # (set on message fields only)
            value = message_type.fields_by_name["value"]
            return {"type": "object", "additionalProperties": self._single(value)}
        if field.is_repeated:
            return {"type": "array", "items": self._single(field)}
        return self._single(field)


ERROR_SCHEMA = {
    "type": "object",
    "required": ["code", "reason", "message"],
    "properties": {
        "code": {"type": "string", "description": "gRPC status code name, e.g. INVALID_ARGUMENT"},
        "reason": {"type": "string", "description": "UPPER_SNAKE_CASE reason (google.rpc.ErrorInfo.reason)"},
        "message": {"type": "string"},
        "request_id": {"type": "string"},
        "details": {
            "type": "object",
            "properties": {
                "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
                "field_violations": {
                    "type": "array",
                    "items": {"type": "object", "properties": {"field": {"type": "string"},
                                                               "description": {"type": "string"}}},
                },
                "expected_schema": {"type": "object", "description": "JSON Schema the params must satisfy"},
            },
        },
    },
}  # fmt: skip


# ExecuteRequest.validate_only (AIP-163) on the HTTP projection.
VALIDATE_ONLY_PARAMETER: dict[str, Any] = {
    "name": "validate_only",
    "in": "query",
    "required": False,
    "schema": {"type": "boolean", "default": False},
    "description": (
        "Validate the call exactly as without this flag and answer the normal result, changing nothing "
        "(no job, no credit hold, no stored item or artifact, nothing recorded under an Idempotency-Key). "
        "Spends answer their `estimate` (flat, per_km2 x area_km2, per_asset x asset_count, minimum, "
        "total_credits, balance_after); a spend the balance cannot pay fails 400 INSUFFICIENT_CREDITS "
        "with the estimate in the error's metadata; analytics.execute answers `pixels_to_read`. "
        "See ExecuteRequest.validate_only in kernel.proto."
    ),
}


def openapi_document(registry: OperationRegistry, server_url: str = "/") -> dict[str, Any]:
    builder = _SchemaBuilder()
    paths: dict[str, Any] = {}
    for operation in registry:
        paths[f"/v1/op/{operation.name}"] = {
            "post": {
                "operationId": operation.name.replace(".", "_"),
                "summary": operation.description,
                "description": (
                    f"Scope `{operation.scope}`; side effect: {operation.side_effect}."
                    + (" Honours the `Idempotency-Key` header." if operation.idempotency_key else "")
                ),
                "parameters": (
                    [{"name": "Idempotency-Key", "in": "header", "required": False,
                      "schema": {"type": "string", "minLength": 1, "maxLength": 255}}]
                    if operation.idempotency_key else []
                ) + [VALIDATE_ONLY_PARAMETER],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": builder.ref(descriptor_of(operation.params_type))}},
                },
                "responses": {
                    "200": {
                        "description": "the operation's result",
                        "content": {"application/json": {"schema": builder.ref(descriptor_of(operation.result_type))}},
                    },
                    "default": error_response(),
                },
            }
        }  # fmt: skip
    paths["/v1/jobs/{job_id}/events"] = {
        "get": {
            "operationId": "jobs_events",
            "summary": "A job's status as server-sent events: the snapshot, then every change, "
            "ending after the terminal state. Resume with `after_sequence` or `Last-Event-ID`. "
            "`include_logs=true` adds the job's log records as `log` events (before the terminal one), "
            "from `after_log_sequence`, of at least `min_log_level` (`debug`..`critical` or 1..5).",
            "parameters": [
                path_param("job_id"),
                query_param("after_sequence", schema={"type": "integer"}),
                query_param("include_logs", schema={"type": "boolean"}),
                query_param("after_log_sequence", schema={"type": "integer"}),
                query_param("min_log_level"),
            ],
            "responses": {"200": {"description": "text/event-stream of WatchJobResponse JSON objects"}},
        }
    }
    paths["/v1/projects/{project_id}/jobs/events"] = {
        "get": {
            "operationId": "projects_jobs_events",
            "summary": "WatchJobs as server-sent events: every event of a batch's jobs (`batch_id`) or of the "
            "project's unfinished jobs (filters `status`, `job_type_id`), each job's snapshot first, ending once "
            "every job has ended. Each event's `id` is `job_id:sequence`; resume with `after_sequences` "
            "(`job_id:sequence` pairs separated by commas) or `Last-Event-ID` (one pair).",
            "parameters": [
                path_param("project_id"),
                query_param("batch_id"),
                query_param("status", schema={"type": "string", "enum": ["PENDING", "DISPATCHED", "RUNNING",
                                                                         "SUCCEEDED", "FAILED", "CANCELLED"]}),
                query_param("job_type_id"),
                query_param("after_sequences"),
            ],
            "responses": {
                "200": {"description": "text/event-stream of WatchJobResponse JSON objects"},
                "204": {"description": "nothing newer than after_sequences: every job of the set has ended"},
                "default": error_response(),
            },
        }
    }  # fmt: skip
    paths.update(downloads.openapi_paths())
    paths.update(stac_openapi.openapi_paths())
    paths.update(stac_openapi.health_paths())
    paths.update(tiles_openapi.openapi_paths())
    components = builder.components
    components["Error"] = ERROR_SCHEMA
    return {
        "openapi": "3.1.0",
        "info": {"title": "Geopera kernel", "version": "v1"},
        "servers": [{"url": server_url}],
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }
