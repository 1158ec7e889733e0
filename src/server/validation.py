"""Checks shared by every operation that stores client-supplied JSON."""

from __future__ import annotations

import math
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
