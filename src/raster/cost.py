"""What a job costs: the one cost model job types declare (workers) and the server prices by."""

from __future__ import annotations

import math
from dataclasses import dataclass

from geopera_kernel.raster.domain_errors import invalid_argument

# The largest cost in credits: exact in float arithmetic (the cost is computed
# in floats) and in JavaScript numbers, far below the int64 of the balances.
MAX_CREDITS = 2**53 - 1


@dataclass(frozen=True)
class CostModel:
    """Credits = ceil(flat + per_km2 * km² + per_asset * assets), at least `minimum`. The km²
    are the AOI within the source footprint, or the footprint without an AOI; the server
    refuses coefficients that are not finite numbers >= 0 (`INVALID_COST_MODEL`)."""

    flat: float = 1.0
    per_km2: float = 0.0
    per_asset: float = 0.0
    minimum: int = 1

    @classmethod
    def checked(cls, flat: float, per_km2: float, per_asset: float, minimum: int, field: str) -> CostModel:
        """A declared cost model, refused (INVALID_ARGUMENT `INVALID_COST_MODEL`)
        unless every coefficient is a finite number from 0 to MAX_CREDITS: a NaN,
        infinite or negative price would reserve nonsense or pay the caller.
        A `minimum` of 0 means 1."""
        for name, value in (("flat", flat), ("per_km2", per_km2), ("per_asset", per_asset), ("minimum", minimum)):
            if not (math.isfinite(value) and 0 <= value <= MAX_CREDITS):
                raise invalid_argument(
                    "INVALID_COST_MODEL",
                    f"cost_model.{name} must be a finite number from 0 to {MAX_CREDITS}, not {value!r}",
                    field=f"{field}.{name}",
                )
        return cls(float(flat), float(per_km2), float(per_asset), max(1, int(minimum)))

    def raw(self, area_km2: float, assets: int) -> float:
        """The formula before rounding: flat + per_km2 x km² + per_asset x assets."""
        return self.flat + self.per_km2 * area_km2 + self.per_asset * assets

    @staticmethod
    def rounded_up(raw: float) -> int:
        """Whole credits, before the minimum (a float's last-bit noise is not a credit)."""
        return math.ceil(raw - 1e-9)

    def _price(self, area_km2: float, assets: int) -> int | None:
        """The formula in whole credits; None when it is not a finite number
        of at most MAX_CREDITS."""
        raw = self.raw(area_km2, assets)
        if not (math.isfinite(raw) and raw <= MAX_CREDITS):
            return None
        return max(self.minimum, self.rounded_up(raw))

    def credits(self, area_km2: float, assets: int) -> int:
        """The estimate reserved at creation; refused (INVALID_ARGUMENT
        `COST_OUT_OF_RANGE`) beyond MAX_CREDITS, e.g. a huge AOI times a
        large per-km² price."""
        price = self._price(area_km2, assets)
        if price is None:
            raise invalid_argument(
                "COST_OUT_OF_RANGE",
                f"the job would cost more than {MAX_CREDITS} credits ({area_km2:.4g} km², {assets} assets), "
                "the most a job may cost",
            )
        return price

    def actual(self, area_km2: float, assets: int) -> int:
        """The cost of what a job did, saturating at MAX_CREDITS: never more
        than the hold is captured anyway (see JobService.succeed)."""
        price = self._price(area_km2, assets)
        return MAX_CREDITS if price is None else price
