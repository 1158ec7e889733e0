"""The catalog: projects, items, assets, uploads and downloads (see service.py for the parts)."""

from geopera_kernel.server.domain.catalog.caches import ByteBudgetLru, ItemRenderer, RenderedItem, rendered_size
from geopera_kernel.server.domain.catalog.items import NewItem, StoredAsset, asset_storage_key, insert_item
from geopera_kernel.server.domain.catalog.reads import CatalogLimits
from geopera_kernel.server.domain.catalog.service import CatalogService

__all__ = [
    "ByteBudgetLru",
    "CatalogLimits",
    "CatalogService",
    "ItemRenderer",
    "NewItem",
    "RenderedItem",
    "StoredAsset",
    "asset_storage_key",
    "insert_item",
    "rendered_size",
]
