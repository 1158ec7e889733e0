"""The catalog: projects, items, assets, uploads and downloads (see service.py for the parts)."""

from server.domain.catalog.caches import ByteBudgetLru, ItemRenderer, LruCache, RenderedItem, rendered_size
from server.domain.catalog.downloads import SOURCE_READER
from server.domain.catalog.items import (
    ASSET_KEY,
    COLLECTION_ID,
    MAX_NAME_LENGTH,
    NewItem,
    StoredAsset,
    asset_storage_key,
    insert_item,
)
from server.domain.catalog.raster_info import asset_json
from server.domain.catalog.reads import CatalogLimits
from server.domain.catalog.service import CatalogService

__all__ = [
    "ASSET_KEY",
    "COLLECTION_ID",
    "MAX_NAME_LENGTH",
    "SOURCE_READER",
    "ByteBudgetLru",
    "CatalogLimits",
    "CatalogService",
    "ItemRenderer",
    "LruCache",
    "NewItem",
    "RenderedItem",
    "StoredAsset",
    "asset_json",
    "asset_storage_key",
    "insert_item",
    "rendered_size",
]
