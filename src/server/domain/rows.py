"""Records built from query rows whose columns carry the record's field names."""

from __future__ import annotations

from dataclasses import fields
from typing import Any, TypeVar

T = TypeVar("T")


def from_columns(cls: type[T], row: dict[str, Any], **computed: Any) -> T:
    """``cls`` with each field taken from the row's column of the same name,
    except the fields given in ``computed`` (converted or derived values)."""
    values = {f.name: row[f.name] for f in fields(cls) if f.name not in computed}  # type: ignore[arg-type]
    return cls(**values, **computed)
