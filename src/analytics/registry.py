"""The method registry: names -> plugin classes, params validation and JSON Schemas."""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel, ValidationError

from geopera_kernel.analytics.base import AnalyticsContext, AnalyticsMethod
from geopera_kernel.raster.domain_errors import Code, DomainError, ExpectedSchema, FieldViolation, invalid_argument

_NAME = re.compile(r"^[a-z][a-z0-9]*(?:_[a-z0-9]+)*$")
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
# One violation per pydantic error, but a pathological payload should not produce megabytes.
_MAX_VIOLATIONS = 50


def json_safe(value: Any) -> Any:
    """NaN/infinity have no JSON spelling: a statistic that is not a number is
    reported as null (e.g. the mean of an empty zone). The server's call and the
    worker's job both answer through it, so they answer alike."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [json_safe(item) for item in value]
    return value


def field_path(prefix: str, loc: tuple[int | str, ...]) -> str:
    """("geometry", "coordinates", 0) -> "params.geometry.coordinates[0]"."""
    return prefix + "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc)


def _violations(error: ValidationError) -> list[FieldViolation]:
    violations = []
    for detail in error.errors(include_url=False)[:_MAX_VIOLATIONS]:
        context = detail.get("ctx") or {}
        # Geometry errors come from geopera_kernel.raster.geo with a precise path of their own.
        path = context.get("field_path") or field_path("params", tuple(detail["loc"]))
        message = detail["msg"]
        if message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        violations.append(FieldViolation(path, message[:300]))
    return violations


class MethodRegistry:
    """Analytics methods by name. ``register`` refuses duplicates and malformed plugins."""

    def __init__(self) -> None:
        self._methods: dict[str, AnalyticsMethod] = {}

    def register(self, cls: type[AnalyticsMethod]) -> type[AnalyticsMethod]:
        """Add a method class (usable as a class decorator); returns the class."""
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ValueError(f"{cls.__name__}: name must be a lower_snake_case identifier, got {name!r}")
        if name in self._methods:
            raise ValueError(f"analytics method {name!r} is already registered")
        for attribute in ("input_model", "output_model"):
            model = getattr(cls, attribute, None)
            if not (isinstance(model, type) and issubclass(model, BaseModel)):
                raise ValueError(f"{cls.__name__}.{attribute} must be a pydantic model class")
        if not isinstance(getattr(cls, "description", None), str) or not cls.description:
            raise ValueError(f"{cls.__name__}: description is required")
        # A broken example would be published by operations.list: fail at registration instead.
        try:
            cls.input_model.model_validate(cls.example)
        except (AttributeError, ValidationError) as error:
            raise ValueError(f"{cls.__name__}.example is not valid params: {error}") from error
        self._methods[name] = cls()
        return cls

    def unregister(self, name: str) -> None:
        """Remove a method (tests and plugin reloads); unknown names are an error."""
        del self._methods[name]

    def copy(self) -> MethodRegistry:
        clone = MethodRegistry()
        clone._methods = dict(self._methods)
        return clone

    def get(self, name: str) -> AnalyticsMethod:
        method = self._methods.get(name)
        if method is None:
            raise self.unknown(name)
        return method

    def unknown(self, name: str, code: Code = Code.INVALID_ARGUMENT) -> DomainError:
        """`UNKNOWN_ANALYTICS_OPERATION` for `name`, listing the known methods: INVALID_ARGUMENT
        (the `operation` field of a call) or NOT_FOUND (a method looked up by name)."""
        known = ", ".join(sorted(self._methods))
        message = f"unknown analytics method {name[:100]!r}; known: {known}"
        metadata = {"known_operations": known}
        if code == Code.INVALID_ARGUMENT:
            return invalid_argument("UNKNOWN_ANALYTICS_OPERATION", message, field="operation", metadata=metadata)
        return DomainError(code, "UNKNOWN_ANALYTICS_OPERATION", message, metadata=metadata)

    def __contains__(self, name: object) -> bool:
        return name in self._methods

    def __iter__(self) -> Iterator[AnalyticsMethod]:
        """Methods ordered by name."""
        return iter([self._methods[name] for name in sorted(self._methods)])

    def __len__(self) -> int:
        return len(self._methods)

    def names(self) -> list[str]:
        return sorted(self._methods)

    # -- schemas and validation ------------------------------------------------

    def input_schema(self, name: str) -> dict[str, Any]:
        return {"$schema": JSON_SCHEMA_DIALECT, **self.get(name).input_model.model_json_schema()}

    def output_schema(self, name: str) -> dict[str, Any]:
        schema = self.get(name).output_model.model_json_schema(mode="serialization")
        return {"$schema": JSON_SCHEMA_DIALECT, **schema}

    def describe(self, name: str) -> dict[str, Any]:
        """name, description, input_schema, output_schema, example (operations.get)."""
        method = self.get(name)
        return {
            "name": method.name,
            "description": method.description,
            "input_schema": self.input_schema(name),
            "output_schema": self.output_schema(name),
            "example": dict(method.example),
        }

    def expected_schema(self, name: str) -> ExpectedSchema:
        return ExpectedSchema(name, self.input_schema(name))

    def validate(self, name: str, params: Any) -> BaseModel:
        """Params (a JSON object) -> the method's input model, or INVALID_ANALYTICS_PARAMS."""
        method = self.get(name)
        if not isinstance(params, dict):
            raise invalid_argument(
                "INVALID_ANALYTICS_PARAMS",
                f"params of {name!r} must be a JSON object",
                field="params",
                expected_schema=self.expected_schema(name),
            )
        try:
            return method.input_model.model_validate(params)
        except ValidationError as error:
            violations = _violations(error)
            raise invalid_argument(
                "INVALID_ANALYTICS_PARAMS",
                f"params do not match the input schema of {name!r}: {violations[0].description}",
                violations=violations,
                expected_schema=self.expected_schema(name),
            ) from None

    def run(
        self, name: str, params: Any, ctx: AnalyticsContext, *, validated: BaseModel | None = None
    ) -> dict[str, Any]:
        """Validate, execute and serialise one call (the result as a JSON-ready dict).

        INVALID_ARGUMENT errors raised while executing (missing bands, ...) get the method's
        expected schema attached when they carry none, so every client-fixable params
        problem comes with the schema.
        """
        method = self.get(name)
        model = validated if validated is not None else self.validate(name, params)
        with self._schema_on_invalid(name):
            result = method.execute(model, ctx)
        return result.model_dump(mode="json")

    def pixels_to_read(self, name: str, model: BaseModel, ctx: AnalyticsContext) -> int | None:
        """A validate-only call (see AnalyticsMethod.pixels_to_read), its errors as `run`'s."""
        with self._schema_on_invalid(name):
            return self.get(name).pixels_to_read(model, ctx)

    @contextlib.contextmanager
    def _schema_on_invalid(self, name: str) -> Iterator[None]:
        try:
            yield
        except DomainError as error:
            if error.code == Code.INVALID_ARGUMENT and error.expected_schema is None:
                error.expected_schema = self.expected_schema(name)
            raise
