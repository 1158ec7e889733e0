"""An analytics method that exists only where tests load it
(GEOPERA_ANALYTICS_PLUGINS=tests.support.analytics_plugins): it proves a new
method is one module, callable everywhere with no proto change."""

from __future__ import annotations

from typing import Any, ClassVar

import rasterio
from pydantic import BaseModel, ConfigDict, Field

from geopera_kernel.analytics import AnalyticsContext, AnalyticsMethod
from geopera_kernel.analytics.reader import select_asset


class PixelCountParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    item_id: str = Field(description="item to look at")
    asset_key: str = Field("data", description="asset of the item")


class PixelCountResult(BaseModel):
    item_id: str
    width: int
    height: int
    pixels: int
    bands: int


class PixelCount(AnalyticsMethod):
    name: ClassVar[str] = "pixel_count"
    description: ClassVar[str] = "Counts the pixels of an asset (a test plugin)."
    input_model: ClassVar[type[BaseModel]] = PixelCountParams
    output_model: ClassVar[type[BaseModel]] = PixelCountResult
    example: ClassVar[dict[str, Any]] = {"item_id": "it_example", "asset_key": "data"}

    def item_ids(self, params: BaseModel) -> list[str]:
        assert isinstance(params, PixelCountParams)
        return [params.item_id]

    def execute(self, params: BaseModel, ctx: AnalyticsContext) -> BaseModel:
        assert isinstance(params, PixelCountParams)
        item = ctx.item(params.item_id)
        # An unknown asset key is the caller's mistake (the fuzz tests found a KeyError here).
        with rasterio.open(select_asset(item, params.asset_key).path) as src:
            return PixelCountResult(item_id=item.id, width=src.width, height=src.height,
                                    pixels=src.width * src.height, bands=src.count)  # fmt: skip


METHODS = [PixelCount]
