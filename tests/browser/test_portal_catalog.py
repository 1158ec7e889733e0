"""The catalog and item pages in a real browser: the map shows every item of the project
(footprint count = items.list), the filters ask the server what the SDK asks, and an item
page shows the statistics items.get answers, a preview that loads, a signed URL that
downloads the asset's bytes with no header, and the lineage of a clip."""

from __future__ import annotations

import hashlib
import urllib.request
from datetime import UTC, datetime

import pytest
from selenium.webdriver.support.ui import Select

SAMPLE = "s2l1c_slovenia_20150711_bgrn"
AOI = {
    "type": "Polygon",
    "coordinates": [[[14.555, 45.868], [14.56, 45.868], [14.56, 45.872], [14.555, 45.872], [14.555, 45.868]]],
}


def _catalog_loaded(portal) -> int:
    """Waits for the catalog's load to end; answers the footprints drawn."""
    portal.wait_ready("catalog")
    portal.wait(lambda: portal.js("return !document.getElementById('catalog-map').dataset.loading"), what="the items")
    return len(portal.find_all("#catalog-map path.gp-footprint"))


def _item_ids(portal) -> list[str]:
    return [li.get_attribute("data-item-id") for li in portal.find_all("#catalog-list li")]


@pytest.mark.parametrize("viewport", ["desktop", "phone"])
def test_the_map_shows_a_footprint_and_a_list_entry_for_every_item(portal, portal_server, viewport):
    portal.sign_in(portal_server.token)
    drawn = _catalog_loaded(portal)
    with portal_server.sdk() as sdk:
        items = list(sdk.items.list("demo"))
    assert drawn == len(items) >= 7
    assert sorted(_item_ids(portal)) == sorted(item.id for item in items)
    assert portal.find("#catalog-count").text == f"{len(items)} items"
    # The tile previews come from the signed tile template: images that decoded.
    portal.wait(
        lambda: portal.js(
            "return [...document.querySelectorAll('#catalog-map img.leaflet-tile-loaded')]"
            ".filter(img => img.naturalWidth > 0).length"
        ),
        what="tile previews",
    )
    portal.screenshot("catalog")


def test_the_filters_ask_for_what_the_sdk_asks_for(portal, portal_server):
    portal.sign_in(portal_server.token)
    _catalog_loaded(portal)
    portal.find("#filter-from").send_keys("08012015")  # the date input's mm/dd/yyyy
    portal.find("#filter-to").send_keys("08312015")
    portal.find("#filter-apply").click()
    drawn = _catalog_loaded(portal)
    with portal_server.sdk() as sdk:
        august = list(
            sdk.items.list(
                "demo", datetime_start=datetime(2015, 8, 1, tzinfo=UTC), datetime_end=datetime(2015, 9, 1, tzinfo=UTC)
            )
        )
        other = list(sdk.items.list("demo", collection_id="no_such_collection"))
    # The two August samples, and any clip output another portal test made of them before
    # this one (outputs carry their source's date; which tests ran first depends on the run).
    assert drawn == len(august) and sum(item.collection_id == "s2_slovenia" for item in august) == 2
    assert sorted(_item_ids(portal)) == sorted(item.id for item in august)

    # A collection, with the dates still set.
    Select(portal.find("#filter-collection")).select_by_value("s2_slovenia")
    portal.find("#filter-apply").click()
    assert _catalog_loaded(portal) == 2
    portal.find("#filter-from").send_keys("01012015")
    portal.find("#filter-to").send_keys("12312015")
    portal.find("#filter-apply").click()
    drawn = _catalog_loaded(portal)
    with portal_server.sdk() as sdk:
        samples = list(sdk.items.list("demo", collection_id="s2_slovenia"))
    assert drawn == len(samples) == 7

    # Only what lies in the map's view: none once the map looks elsewhere.
    portal.find("#filter-reset").click()
    assert _catalog_loaded(portal) >= 7
    portal.find("#filter-in-view").click()
    portal.find("#filter-apply").click()
    assert _catalog_loaded(portal) >= 7
    portal.js("document.getElementById('catalog-map').gpMap.setView([0, 0], 10)")
    portal.wait(lambda: portal.find("#catalog-count").text == "0 items", what="an empty view")
    assert other == [] and not portal.find_all("#catalog-map path.gp-footprint")


@pytest.mark.parametrize("viewport", ["desktop", "phone"])
def test_the_item_page_shows_what_items_get_answers(portal, portal_server, viewport):
    with portal_server.sdk() as sdk:
        item = next(i for i in sdk.items.list("demo") if i.name == SAMPLE)
        item = sdk.items.get(item.id)
    portal.sign_in(portal_server.token)
    _catalog_loaded(portal)
    portal.find(f'#catalog-list li[data-item-id="{item.id}"] a').click()
    portal.wait_ready("item")
    assert portal.find("#item-title").text == SAMPLE

    asset = item.assets["data"]
    table = portal.find("#bands-data")
    assert len(table.find_elements("css selector", "tbody tr")) == len(asset.bands) == 4
    for index, band in enumerate(asset.bands, start=1):
        for stat in ("minimum", "maximum", "mean", "stddev", "valid_percent"):
            cell = portal.find(f'#bands-data tr[data-band="{index}"] td[data-stat="{stat}"]')
            assert float(cell.get_attribute("data-value")) == getattr(band.statistics, stat), (index, stat)
    facts = portal.find('.asset[data-asset-key="data"] dl').text
    assert asset.media_type in facts and f"{asset.size_bytes:,} bytes" in facts

    portal.wait(
        lambda: portal.js(
            "const img = document.getElementById('item-preview'); return img && img.complete && img.naturalWidth"
        ),
        what="the preview image",
    )
    portal.screenshot("item", full_page=viewport == "desktop")


def test_copy_signed_url_gives_a_url_that_downloads_the_asset_without_a_header(portal, portal_server):
    with portal_server.sdk() as sdk:
        item = next(i for i in sdk.items.list("demo") if i.name == SAMPLE)
        asset = sdk.items.get(item.id).assets["data"]
    portal.sign_in(portal_server.token)
    portal.go(f"#/items/{item.id}")
    portal.wait_ready("item")
    portal.find("#copy-url-data").click()
    url = portal.wait(lambda: portal.find("#signed-url-data").get_attribute("value"), what="the signed URL")
    assert "/v1/items/" in url and "sig" in url.lower()
    with urllib.request.urlopen(url) as response:  # no Authorization header
        data = response.read()
    assert len(data) == asset.size_bytes and hashlib.sha256(data).hexdigest() == asset.sha256
    assert portal.find("#asset-status-data").text.startswith(("Copied", "Copy the URL"))


def test_download_saves_the_asset_as_stored(portal, portal_server):
    with portal_server.sdk() as sdk:
        item = next(i for i in sdk.items.list("demo") if i.name == SAMPLE)
        asset = sdk.items.get(item.id).assets["data"]
    portal.sign_in(portal_server.token)
    portal.go(f"#/items/{item.id}")
    portal.wait_ready("item")
    portal.find("#download-data").click()
    assert portal.downloads is not None
    saved = portal.downloads / asset.title
    portal.wait(lambda: saved.is_file() and not list(portal.downloads.glob("*.crdownload")), what="the download")
    assert hashlib.sha256(saved.read_bytes()).hexdigest() == asset.sha256


def test_the_lineage_graph_links_a_clip_to_its_job_and_source(portal, portal_server):
    with portal_server.sdk() as sdk:
        source = next(i for i in sdk.items.list("demo") if i.name == SAMPLE)
        job = sdk.clip(source.id, AOI, output_name="portal_lineage_clip")
        job.wait(timeout=120)
        job = job.refresh()
        (output_id,) = job.output_item_ids
        lineage = sdk.items.lineage(output_id)
    portal.sign_in(portal_server.token)
    portal.go(f"#/items/{output_id}")
    portal.wait_ready("item")
    graph = portal.visible("#item-lineage svg")
    # The clip, its job and its source: one box each, an arrow source -> job -> clip.
    assert {(n.kind, n.id) for n in lineage.nodes} == {("item", output_id), ("job", job.id), ("item", source.id)}
    assert graph.get_attribute("data-nodes") == "3" and graph.get_attribute("data-edges") == "2"
    links = {a.get_dom_attribute("href") for a in portal.find_all("#item-lineage svg a")}
    assert links == {f"#/items/{source.id}", f"#/jobs/{job.id}"}
    portal.screenshot("lineage", full_page=True)
    # The source's box opens the source's page, which shows the clip downstream.
    portal.find(f'#item-lineage svg a[href="#/items/{source.id}"]').click()
    portal.wait(
        lambda: portal.js("return document.body.dataset.ready === 'item' && location.hash") == f"#/items/{source.id}"
    )
    portal.wait(lambda: portal.find_all(f'#item-lineage svg a[href="#/items/{output_id}"]'), what="the derived item")


def test_an_unknown_item_says_so(portal, portal_server):
    portal.allow_console(r"status of 404")
    portal.sign_in(portal_server.token)
    portal.go("#/items/it_00000000000000000000000000")
    portal.wait_ready("item")
    message = portal.visible(".page-item .page-error")
    assert message.get_attribute("data-reason") == "ITEM_NOT_FOUND" and "does not exist" in message.text


def test_the_project_picker_switches_the_catalog(portal, portal_server):
    portal_server.admin("project", "create", "portal_other", "--display-name", "Other project")
    _, token = portal_server.make_token(["catalog:read"], projects=("demo", "portal_other"))
    portal.sign_in(token)
    picker = Select(portal.find("#project-picker"))
    assert {o.get_attribute("value") for o in picker.options} == {"demo", "portal_other"}
    assert _catalog_loaded(portal) >= 7
    picker.select_by_value("portal_other")
    portal.wait(lambda: "portal_other" in portal.find("h1").text, what="the other project's catalog")
    assert _catalog_loaded(portal) == 0 and portal.find("#catalog-count").text == "0 items"
    # The choice holds across a reload (session storage).
    portal.driver.refresh()
    assert _catalog_loaded(portal) == 0
    assert Select(portal.find("#project-picker")).first_selected_option.get_attribute("value") == "portal_other"
