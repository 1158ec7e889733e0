"""Checks of client-supplied values shared by operations: JSON that is stored, and
lists whose every element must be one of a known set."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from geopera_kernel.server.errors import invalid_argument


def require_finite_json(value: Any, field: str) -> None:
    """JSON has no NaN or infinity, so free-form params (stored as JSON)
    must not carry them; the violation names the member."""
    if isinstance(value, float) and not math.isfinite(value):
        raise invalid_argument("NON_FINITE_NUMBER", f"{value} is not a JSON number", field=field)
    if isinstance(value, dict):
        for key, item in value.items():
            require_finite_json(item, f"{field}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            require_finite_json(item, f"{field}[{index}]")


def require_known(values: Iterable[str], known: Sequence[str], *, reason: str, field: str, unknown: str) -> None:
    """Each of a list field's `values` must be one of `known`: the first that is not is
    refused (INVALID_ARGUMENT `reason` on `field[index]`), the message naming it after
    `unknown` (cut to 64 characters: it is the client's text) and listing what is known."""
    for index, value in enumerate(values):
        if value not in known:
            listed = ", ".join(known) or "none"
            raise invalid_argument(reason, f"{unknown} {value[:64]!r}; known: {listed}", field=f"{field}[{index}]")
