"""Analytics methods as Python callables, built from the server's description
(`analytics.operations.list`): a new server-side method needs no SDK release."""

from __future__ import annotations

import inspect
import json
import keyword
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from geopera.v1 import analytics_pb2, resources_pb2
from geopera_sdk._convert import struct_to_dict
from geopera_sdk._jsonview import shape


@dataclass(frozen=True)
class AnalyticsResult:
    """The result of one analytics method call."""

    operation: str
    result: dict[str, Any]
    outputs: list[resources_pb2.Artifact] = field(default_factory=list)
    # A validate-only call's answer: the pixels the method would read, and
    # whether that is over the server's synchronous limit (then use
    # `client.analytics.submit`, which runs the call as a job).
    pixels_to_read: int | None = None
    exceeds_sync_max_pixels: bool = False
    sync_max_pixels: int = 0

    def __getitem__(self, key: str) -> Any:
        return self.result[key]

    @classmethod
    def from_proto(
        cls, message: analytics_pb2.AnalyticsExecuteResult, output_schema: dict[str, Any] | None = None
    ) -> AnalyticsResult:
        """With the method's `output_schema`, the result has its types and key
        order (a count is an int, not the Struct's double)."""
        result = struct_to_dict(message.result)
        if output_schema is not None:
            result = shape(result, output_schema)
        pixels = message.pixels_to_read if message.HasField("pixels_to_read") else None
        return cls(message.operation, result, list(message.outputs), pixels, message.exceeds_sync_max_pixels,
                   message.sync_max_pixels)  # fmt: skip


_JSON_TYPES: dict[str, Any] = {
    "string": str,
    "integer": int,
    "number": float,
    "boolean": bool,
    "array": list,
    "object": dict,
    "null": type(None),
}


def _annotation(schema: Mapping[str, Any]) -> Any:
    """A Python annotation for a JSON Schema (best effort, for help() and IDEs)."""
    if "enum" in schema and all(isinstance(v, str | int | bool) for v in schema["enum"]):
        return Literal[tuple(schema["enum"])]
    for combinator in ("anyOf", "oneOf"):
        if combinator in schema:
            options = [_annotation(option) for option in schema[combinator]]
            result = options[0]
            for option in options[1:]:
                try:
                    result = result | option
                except TypeError:
                    return Any
            return result
    kind = schema.get("type")
    if isinstance(kind, list):
        kinds = [_JSON_TYPES.get(k, Any) for k in kind]
        result = kinds[0]
        for option in kinds[1:]:
            result = result | option
        return result
    return _JSON_TYPES.get(kind, Any) if isinstance(kind, str) else Any


def _type_text(schema: Mapping[str, Any]) -> str:
    if "enum" in schema:
        return " | ".join(json.dumps(v) for v in schema["enum"])
    for combinator in ("anyOf", "oneOf"):
        if combinator in schema:
            return " | ".join(_type_text(option) for option in schema[combinator])
    kind = schema.get("type")
    if isinstance(kind, list):
        return " | ".join(kind)
    if kind == "array" and isinstance(schema.get("items"), Mapping):
        return f"array of {_type_text(schema['items'])}"
    if "$ref" in schema:
        return str(schema["$ref"]).rsplit("/", 1)[-1]
    return str(kind or "any")


@dataclass(frozen=True)
class MethodSpec:
    """What the SDK knows about one analytics method."""

    name: str
    description: str
    input_schema: dict[str, Any]
    output_schema: dict[str, Any]
    example: dict[str, Any]

    @classmethod
    def from_proto(cls, message: analytics_pb2.AnalyticsOperation) -> MethodSpec:
        return cls(
            message.name,
            message.description,
            struct_to_dict(message.input_schema),
            struct_to_dict(message.output_schema),
            struct_to_dict(message.example),
        )

    @property
    def properties(self) -> dict[str, Any]:
        props = self.input_schema.get("properties")
        return dict(props) if isinstance(props, Mapping) else {}

    @property
    def required(self) -> list[str]:
        return [str(r) for r in self.input_schema.get("required", [])]

    @property
    def closed(self) -> bool:
        """True when the schema refuses properties it does not list."""
        return self.input_schema.get("additionalProperties", True) is False

    def signature(self) -> inspect.Signature:
        parameters = []
        required = set(self.required)
        ordered = [n for n in self.properties if n in required] + [n for n in self.properties if n not in required]
        for name in ordered:
            if not name.isidentifier() or keyword.iskeyword(name):
                continue
            schema = self.properties[name] if isinstance(self.properties[name], Mapping) else {}
            default = inspect.Parameter.empty if name in required else schema.get("default")
            parameters.append(
                inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=_annotation(schema))
            )
        if not self.closed or any(not n.isidentifier() or keyword.iskeyword(n) for n in self.properties):
            parameters.append(inspect.Parameter("params", inspect.Parameter.VAR_KEYWORD, annotation=Any))
        return inspect.Signature(parameters, return_annotation=AnalyticsResult)

    def docstring(self) -> str:
        lines = [self.description.strip() or self.name, "", "Parameters (JSON Schema of the server):"]
        required = set(self.required)
        for name, schema in self.properties.items():
            schema = schema if isinstance(schema, Mapping) else {}
            flags = "required" if name in required else f"default {json.dumps(schema.get('default'))}"
            lines.append(f"    {name} ({_type_text(schema)}; {flags})")
            if schema.get("description"):
                lines.append(f"        {schema['description']}")
        if self.example:
            lines += ["", "Example params:", "    " + json.dumps(self.example)]
        lines += ["", f"Returns an AnalyticsResult (operation {self.name!r}); unknown or invalid params raise "
                  "InvalidArgument with the violations and the expected schema."]  # fmt: skip
        return "\n".join(lines)

    def check_names(self, params: Mapping[str, Any]) -> None:
        """TypeError for a keyword the (closed) schema does not know, like any Python function."""
        if self.closed:
            unknown = sorted(set(params) - set(self.properties))
            if unknown:
                raise TypeError(
                    f"{self.name}() got unexpected keyword argument(s) {', '.join(unknown)}; "
                    f"known: {', '.join(self.properties)}"
                )


def make_method(spec: MethodSpec, invoke: Callable[[str, dict[str, Any]], Any], *, is_async: bool) -> Any:
    """A callable with the method's name, signature and docstring that runs
    `invoke(name, params)` (returning what `invoke` returns: a result or an awaitable)."""

    method: Any  # a function given attributes of its own (__signature__, spec)
    if is_async:

        async def run_async(**params: Any) -> AnalyticsResult:
            spec.check_names(params)
            result: AnalyticsResult = await invoke(spec.name, params)
            return result

        method = run_async
    else:

        def run(**params: Any) -> AnalyticsResult:
            spec.check_names(params)
            result: AnalyticsResult = invoke(spec.name, params)
            return result

        method = run
    method.__name__ = spec.name
    method.__qualname__ = f"Analytics.{spec.name}"
    method.__doc__ = spec.docstring()
    method.__signature__ = spec.signature()
    method.spec = spec
    return method
