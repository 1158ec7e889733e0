"""Self-contained JSON Schemas of params messages, for MCP `inputSchema`.

The OpenAPI generator (`geopera_kernel.server.rest.openapi`) is reused as is: it describes a
message with `$ref`s into `#/components/schemas`. A tool's schema must stand
alone, so the root message is inlined and every message it reaches is copied
into `$defs` with the refs rewritten (messages may be recursive, so they are
never inlined further than the root)."""

from __future__ import annotations

import copy
import functools
from typing import Any

from google.protobuf.descriptor import Descriptor

from geopera_kernel.server.rest.openapi import _SchemaBuilder

_COMPONENTS = "#/components/schemas/"
_DEFS = "#/$defs/"


def _rewrite(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            key: (_DEFS + value[len(_COMPONENTS) :])
            if key == "$ref" and isinstance(value, str) and value.startswith(_COMPONENTS)
            else _rewrite(value)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_rewrite(value) for value in node]
    return node


def _refs(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = {node["$ref"][len(_DEFS) :]} if isinstance(node.get("$ref"), str) else set()
        for value in node.values():
            found |= _refs(value)
        return found
    if isinstance(node, list):
        return set().union(*(_refs(value) for value in node)) if node else set()
    return set()


@functools.cache
def _message_schema(full_name: str, descriptor: Descriptor) -> dict[str, Any]:
    builder = _SchemaBuilder()
    root = builder.ref(descriptor)
    if "$ref" not in root:  # a well-known type: already inline
        return {"type": "object", **root} if root.get("type") in (None, "object") else root
    definitions = {name: _rewrite(schema) for name, schema in builder.components.items()}
    root_name = root["$ref"][len(_COMPONENTS) :]
    schema = copy.deepcopy(definitions[root_name])
    # Every message reachable from the root (the root too, if it is recursive).
    reachable: set[str] = set()
    pending = _refs(schema)
    while pending:
        name = pending.pop()
        if name not in reachable:
            reachable.add(name)
            pending |= _refs(definitions[name])
    if reachable:
        schema["$defs"] = {name: definitions[name] for name in sorted(reachable)}
    return schema


def message_schema(descriptor: Descriptor) -> dict[str, Any]:
    """The JSON Schema of a message in the proto3 JSON mapping (snake_case
    names), with no external refs. A fresh copy: callers may extend it."""
    return copy.deepcopy(_message_schema(descriptor.full_name, descriptor))
