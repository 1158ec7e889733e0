"""items.get serves each item's encoding stored in the database (`item_renders`),
written on the item's first read: the stored bytes must equal a fresh conversion
of the item's rows, items without a stored render (created before the table
existed) must be served and backfilled, and a render under another encoding's key
must never be served."""

from __future__ import annotations

import psycopg
import pytest
from psycopg.rows import dict_row

from geopera.v1 import catalog_pb2, resources_pb2
from geopera_kernel.server.api import convert
from geopera_kernel.server.domain.models import ItemRecord
from geopera_kernel.server.ids import new_id
from geopera_kernel.server.store import Q
from tests.support.client import RpcFailure


def _fresh_conversion(url: str, item_id: str) -> bytes:
    """The item's encoding built here, from its rows, by the conversion the server uses."""
    with psycopg.connect(url, row_factory=dict_row) as conn:
        row = conn.execute(Q.get_item, {"id": item_id}).fetchone()
    assert row is not None
    return convert.item_bytes(ItemRecord.from_row(row))


def _stored(url: str, item_id: str) -> dict | None:
    with psycopg.connect(url, row_factory=dict_row) as conn:
        return conn.execute(
            "SELECT project_id, render_key, body FROM item_renders WHERE item_id = %s", (item_id,)
        ).fetchone()


def _copy_item(url: str, template_id: str) -> str:
    """A new item whose rows copy `template_id`'s, inserted in SQL as the item
    rows of a database migrated before `item_renders` existed: no render stored."""
    copy_id = new_id("it")
    with psycopg.connect(url) as conn:
        conn.execute(
            "INSERT INTO items (id, project_id, collection_id, name, geometry, bbox_west, bbox_south, bbox_east,"
            " bbox_north, datetime, properties, job_id)"
            " SELECT %(copy)s, project_id, collection_id, name || '-' || %(copy)s, geometry, bbox_west, bbox_south,"
            " bbox_east, bbox_north, datetime, properties, job_id FROM items WHERE id = %(template)s",
            {"copy": copy_id, "template": template_id},
        )
        conn.execute(
            "INSERT INTO assets (item_id, key, storage_key, media_type, title, roles, size_bytes, sha256, bands,"
            " grid, render)"
            " SELECT %(copy)s, key, storage_key, media_type, title, roles, size_bytes, sha256, bands, grid, render"
            " FROM assets WHERE item_id = %(template)s",
            {"copy": copy_id, "template": template_id},
        )
    return copy_id


def _get(world, item_id: str, token: str = "alpha") -> resources_pb2.Item:
    return world.client(token).execute("items.get", catalog_pb2.ItemsGetParams(item_id=item_id)).item


def test_the_stored_render_equals_a_fresh_conversion(world):
    item_id = world.items[sorted(world.items)[0]]
    served = _get(world, item_id)
    stored = _stored(world.database_url, item_id)
    assert stored is not None, "the first read stores the item's render"
    fresh = _fresh_conversion(world.database_url, item_id)
    assert stored["body"] == fresh
    assert stored["render_key"] == convert.ITEM_RENDER_KEY and stored["project_id"] == "alpha"
    assert served == resources_pb2.Item.FromString(fresh)
    assert served.id == item_id and len(served.assets) >= 1 and served.geometry.fields["type"].string_value


def test_an_item_without_a_stored_render_is_served_and_backfilled(world):
    template_id = world.items[sorted(world.items)[0]]
    copy_id = _copy_item(world.database_url, template_id)
    assert _stored(world.database_url, copy_id) is None

    served = _get(world, copy_id)

    fresh = _fresh_conversion(world.database_url, copy_id)
    assert served == resources_pb2.Item.FromString(fresh)
    assert served.id == copy_id and served.assets["data"].href == f"items/{copy_id}/assets/data"
    stored = _stored(world.database_url, copy_id)
    assert stored is not None and stored["body"] == fresh and stored["render_key"] == convert.ITEM_RENDER_KEY


def _store_render(url: str, item_id: str, project_id: str, render_key: str, item: resources_pb2.Item) -> None:
    with psycopg.connect(url) as conn:
        conn.execute(
            Q.put_item_render,
            {"id": item_id, "project_id": project_id, "render_key": render_key, "body": item.SerializeToString()},
        )


def test_a_stored_render_is_what_a_read_serves(world):
    """A read the server has not cached is one lookup of the stored bytes: a
    render planted under the current key is served as stored, not rebuilt."""
    copy_id = _copy_item(world.database_url, world.items[sorted(world.items)[0]])
    planted = resources_pb2.Item.FromString(_fresh_conversion(world.database_url, copy_id))
    planted.name = "served-from-the-stored-render"
    _store_render(world.database_url, copy_id, "alpha", convert.ITEM_RENDER_KEY, planted)
    assert _get(world, copy_id) == planted


def test_a_render_under_another_key_is_rebuilt_not_served(world):
    copy_id = _copy_item(world.database_url, world.items[sorted(world.items)[0]])
    stale = resources_pb2.Item.FromString(_fresh_conversion(world.database_url, copy_id))
    stale.name = "written-by-an-older-encoding"
    _store_render(world.database_url, copy_id, "alpha", "item-v0-older", stale)

    served = _get(world, copy_id)

    fresh = _fresh_conversion(world.database_url, copy_id)
    assert served == resources_pb2.Item.FromString(fresh) and served.name != stale.name
    stored = _stored(world.database_url, copy_id)
    assert stored is not None and stored["render_key"] == convert.ITEM_RENDER_KEY and stored["body"] == fresh


@pytest.mark.parametrize("stored_first", [True, False], ids=["render-stored", "no-render-yet"])
def test_a_stored_render_keeps_the_project_check(world, stored_first):
    copy_id = _copy_item(world.database_url, world.items[sorted(world.items)[0]])
    if stored_first:
        _store_render(
            world.database_url,
            copy_id,
            "alpha",
            convert.ITEM_RENDER_KEY,
            resources_pb2.Item.FromString(_fresh_conversion(world.database_url, copy_id)),
        )
    with pytest.raises(RpcFailure) as denied:
        _get(world, copy_id, token="beta")
    assert denied.value.reason == "PROJECT_ACCESS_DENIED"
    assert _get(world, copy_id).id == copy_id


def test_a_missing_item_is_not_found(world):
    with pytest.raises(RpcFailure) as missing:
        _get(world, "it_does_not_exist")
    assert missing.value.reason == "ITEM_NOT_FOUND"
    assert _stored(world.database_url, "it_does_not_exist") is None
