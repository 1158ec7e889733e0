"""The portal's processing, jobs and analytics pages in a real chromium against a real
`geopera serve --demo` with its worker: the numbers the generated forms get equal the
gRPC answer, a drawn AOI is clipped and its job followed live, the change map is drawn
over the map, validation errors sit next to their fields, a double click pays once and a
job can be cancelled."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.browser.conftest import DEMO_PROJECT, Portal, PortalServer

AOI = {
    "type": "Polygon",
    "coordinates": [[[14.5585, 45.8705], [14.566, 45.8705], [14.566, 45.8765], [14.5585, 45.8765], [14.5585, 45.8705]]],
}
# A 4xx answer the test provokes on purpose is logged by chromium as a failed resource.
CLIENT_ERROR_IN_CONSOLE = r"status of 4\d\d"


def demo_items(server: PortalServer) -> dict[str, str]:
    """The demo items by name -> id."""
    with server.sdk() as client:
        return {item.name: item.id for item in client.items.list(DEMO_PROJECT)}


def open_page(portal: Portal, server: PortalServer, route: str, page: str) -> None:
    portal.sign_in(server.token)
    portal.go(route)
    portal.wait_ready(page)


def set_value(portal: Portal, css: str, value: str) -> None:
    """Types into an input or textarea (or picks an option of a select) as a user would."""
    from selenium.webdriver.support.ui import Select

    element = portal.visible(css)
    if element.tag_name == "select":
        Select(element).select_by_value(value)
        return
    element.clear()
    element.send_keys(value)


def choose_method(portal: Portal, name: str) -> None:
    portal.visible(f'#analytics-methods button[data-method="{name}"]').click()
    portal.wait(lambda: portal.find(f"form[data-method='{name}']"), what=f"the {name} form")


def result_cells(portal: Portal) -> dict[str, Any]:
    cells = portal.js(
        "return [...document.querySelectorAll('#analytics-result td[data-path]')]"
        ".map(td => [td.dataset.path, td.dataset.value])"
    )
    return {path: json.loads(value) for path, value in cells}


def at_path(value: Any, path: str) -> Any:
    for part in path.split("."):
        value = value[int(part)] if isinstance(value, list) else value[part]
    return value


def run_form(portal: Portal, method: str) -> None:
    portal.find(f"form[data-method='{method}'] button[type=submit]").click()


@pytest.mark.parametrize("viewport", ["desktop", "phone"])
def test_zonal_statistics_from_the_generated_form_equal_the_grpc_answer(portal, portal_server, viewport):
    item_id = demo_items(portal_server)["s2l1c_slovenia_20150711_bgrn"]
    open_page(portal, portal_server, "#/analytics", "analytics")
    choose_method(portal, "zonal_stats")
    prefix = "#method-zonal_stats"
    set_value(portal, f"{prefix}-item_id", item_id)
    set_value(portal, f"{prefix}-index_name", "NDVI")
    if viewport == "phone":
        # No mouse: zoom the map in with the keyboard and take its view as the AOI.
        portal.find("#analytics-map").send_keys("++")
        time.sleep(1)  # the zoom animation
        portal.find("#analytics-map-view").click()
        aoi = portal.wait(lambda: json.loads(portal.find(f"{prefix}-geometry").get_attribute("value") or "null"))
    else:
        aoi = AOI
        set_value(portal, f"{prefix}-geometry", json.dumps(AOI))
    set_value(portal, f"{prefix}-percentiles", "10, 50, 90")
    portal.find(f"{prefix}-histogram-include").click()
    set_value(portal, f"{prefix}-histogram-bins", "8")
    portal.screenshot("zonal-form")
    run_form(portal, "zonal_stats")
    portal.wait(lambda: portal.find("#analytics-result[data-operation=zonal_stats]"), 60, "the zonal statistics")
    portal.screenshot("zonal-result", full_page=True)

    params = {
        "item_id": item_id,
        "index_name": "NDVI",
        "geometry": aoi,
        "percentiles": [10, 50, 90],
        "histogram": {"bins": 8},
    }
    with portal_server.sdk() as client:
        expected = client.analytics.execute("zonal_stats", params).result
    shown = result_cells(portal)
    for key in ("count", "min", "max", "mean", "std", "nodata_count"):
        assert f"zones.0.stats.{key}" in shown
    assert "zones.0.percentiles.2.value" in shown and "pixels_read" in shown
    for path, value in shown.items():
        assert value == at_path(expected, path), path
    bars = portal.js(
        "return [...document.querySelectorAll('#analytics-result svg .bar')].map(b => Number(b.dataset.count))"
    )
    assert bars == expected["zones"][0]["histogram"]["counts"]


def draw_square(portal: Portal, map_css: str, half: int = 50) -> None:
    """Draws an AOI with the mouse: Draw AOI, three corners clicked, the fourth double-clicked."""
    from selenium.webdriver.common.action_chains import ActionChains

    portal.visible(f"{map_css}-draw").click()
    map_element = portal.find(map_css)
    actions = ActionChains(portal.driver)
    for dx, dy in ((-half, -half), (half, -half), (half, half)):
        actions.move_to_element_with_offset(map_element, dx, dy).click().pause(0.3)
    actions.move_to_element_with_offset(map_element, -half, half).double_click().perform()


def test_a_drawn_aoi_is_clipped_and_the_job_followed_to_its_end(portal, portal_server):
    item_id = demo_items(portal_server)["s2l1c_slovenia_20150731_bgrn"]
    open_page(portal, portal_server, "#/process", "process")
    set_value(portal, "#job-source_item_id", item_id)
    draw_square(portal, "#process-map")
    drawn = portal.wait(lambda: portal.find("#job-aoi_geometry").get_attribute("value"), what="the drawn AOI")
    geometry = json.loads(drawn)
    assert geometry["type"] == "Polygon" and len(geometry["coordinates"][0]) >= 4
    estimate = portal.wait(lambda: portal.find("#process-cost .estimate").get_attribute("data-credits"), what="a price")
    set_value(portal, "#job-output_name", "portal_drawn_clip")
    portal.screenshot("clip-drawn", full_page=True)
    portal.find("#job button[type=submit]").click()

    created = portal.wait(lambda: portal.find(".job-created[data-job-id]"), 30, "the created job")
    job_id = created.get_attribute("data-job-id")
    portal.wait(lambda: portal.find("#process-outcome [data-status=succeeded]"), 60, "the clip to succeed (live)")
    with portal_server.sdk() as client:
        job = client.jobs.get(job_id)
    # The price shown before is the price held (this AOI lies inside the item).
    assert int(estimate) == job.credits_reserved
    portal.screenshot("clip-succeeded")

    portal.go("#/jobs")
    portal.wait_ready("jobs")
    portal.wait(lambda: portal.find(f'tr[data-job-id="{job_id}"][data-status=succeeded]'), 30, "the job in the list")
    portal.find(f'tr[data-job-id="{job_id}"] a').click()
    portal.wait_ready("job")
    portal.wait(lambda: portal.find('#job-events li[data-event="succeeded"]'), 30, "the job's events")
    links = [a.get_attribute("href").split("#")[1] for a in portal.find_all("#job-outputs a")]
    assert links == [f"/items/{output}" for output in job.output_item_ids]
    portal.screenshot("job-page", full_page=True)


def test_the_jobs_list_follows_a_job_live_over_its_event_stream(portal, portal_server):
    item_id = demo_items(portal_server)["s2l1c_slovenia_20150820_bgrn"]
    with portal_server.sdk() as client:
        job = client.jobs.create(DEMO_PROJECT, "clip", {"source_item_id": item_id, "aoi_geometry": AOI,
                                                        "output_name": "portal_live"})  # fmt: skip
    open_page(portal, portal_server, "#/jobs", "jobs")
    row = f'tr[data-job-id="{job.id}"]'
    portal.wait(lambda: portal.find(f"{row}[data-status=pending]"), what="the pending job")
    with portal_server.sdk() as client:
        client.jobs.dispatch(job.id)
    portal.wait(lambda: portal.find(f"{row}[data-status=succeeded]"), 60, "the job to succeed in the list")
    assert int(portal.find(row).get_attribute("data-events")) >= 1, "the status did not come over the stream"
    assert portal.js(f"return document.querySelector('{row} progress').value") == 1
    portal.screenshot("jobs-live")


def test_a_change_detection_result_is_drawn_over_the_map_with_its_legend(portal, portal_server):
    items = demo_items(portal_server)
    before, after = items["s2l1c_slovenia_20150711_bgrn"], items["s2l1c_slovenia_20150909_bgrn"]
    open_page(portal, portal_server, "#/analytics", "analytics")
    choose_method(portal, "change_detection")
    prefix = "#method-change_detection"
    set_value(portal, f"{prefix}-before_item_id", before)
    set_value(portal, f"{prefix}-after_item_id", after)
    set_value(portal, f"{prefix}-index_name", "NDVI")
    set_value(portal, f"{prefix}-change_threshold", "0.1")
    set_value(portal, f"{prefix}-geometry", json.dumps(AOI))
    run_form(portal, "change_detection")
    portal.wait(lambda: portal.find("#analytics-result[data-operation=change_detection]"), 60, "the change map")
    loaded = portal.wait(
        lambda: portal.js(
            "return [...document.querySelectorAll('.gp-result-overlay img.leaflet-tile-loaded')]"
            ".filter(i => i.complete && i.naturalWidth > 0).map(i => i.getAttribute('src'))"
        ),
        30,
        "the difference raster's tiles",
    )
    assert all("/v1/artifacts/" in src for src in loaded)
    legend = portal.visible("#result-legend")
    assert "Increase:" in legend.text and "Decrease:" in legend.text

    params = {
        "before_item_id": before,
        "after_item_id": after,
        "index_name": "NDVI",
        "change_threshold": 0.1,
        "geometry": AOI,
    }
    with portal_server.sdk() as client:
        expected = client.analytics.execute("change_detection", params).result
    shown = result_cells(portal)
    for change in ("increase", "decrease", "no_change"):
        assert shown[f"{change}.area_ha"] == expected[change]["area_ha"]
        assert shown[f"{change}.count"] == expected[change]["count"]
    portal.screenshot("change-map", full_page=True)


@pytest.mark.parametrize("viewport", ["desktop", "phone"])
def test_validation_errors_appear_next_to_the_fields_they_name(portal, portal_server, viewport):
    portal.allow_console(CLIENT_ERROR_IN_CONSOLE)
    item_id = demo_items(portal_server)["s2l1c_slovenia_20150711_bgrn"]
    open_page(portal, portal_server, "#/analytics", "analytics")
    choose_method(portal, "zonal_stats")
    prefix = "#method-zonal_stats"
    set_value(portal, f"{prefix}-item_id", item_id)
    set_value(portal, f"{prefix}-geometry", json.dumps(AOI))
    set_value(portal, f"{prefix}-percentiles", "10, 190")
    run_form(portal, "zonal_stats")
    error = portal.wait(lambda: portal.visible('.field[data-path="percentiles"] .field-error'), 30, "the error")
    assert "less than or equal to 100" in error.text
    assert portal.find(f"{prefix}-percentiles").get_attribute("aria-invalid") == "true"
    assert portal.find_all('.field[data-path="geometry"] .field-error:not([hidden])') == []
    portal.screenshot("analytics-error")

    # A job's params (input_params.*) and an operation's own fields (aoi_geometry.*).
    portal.go("#/process")
    portal.wait_ready("process")
    set_value(portal, "#job-type", "bathymetry")
    portal.wait(lambda: portal.find("#job-m0"), what="the bathymetry form")
    set_value(portal, "#job-source_item_id", item_id)
    set_value(portal, "#job-m0", "52")
    portal.find("#job button[type=submit]").click()
    error = portal.wait(lambda: portal.visible('.field[data-path="m1"] .field-error'), 30, "the m1 error")
    assert "required" in error.text

    set_value(portal, "#job-type", "clip")
    portal.wait(lambda: portal.find("#job-aoi_geometry"), what="the clip form")
    set_value(portal, "#job-source_item_id", item_id)
    set_value(
        portal, "#job-aoi_geometry", json.dumps({"type": "Polygon", "coordinates": [[[14.56, 45.87], [14.561, 45.87]]]})
    )
    portal.find("#job button[type=submit]").click()
    error = portal.wait(lambda: portal.visible('.field[data-path="aoi_geometry"] .field-error'), 30, "the AOI error")
    assert "linear ring" in error.text
    portal.screenshot("process-error")


def test_a_double_click_on_clip_creates_one_job_and_one_hold(portal, portal_server, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains

    item_id = demo_items(portal_server)["s2l1c_slovenia_20150830_bgrn"]
    open_page(portal, portal_server, "#/process", "process")
    set_value(portal, "#job-source_item_id", item_id)
    # The AOI from a GeoJSON file (a FeatureCollection, as GIS tools export them).
    upload = tmp_path / "aoi.geojson"
    upload.write_text(
        json.dumps({"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {}, "geometry": AOI}]})
    )
    portal.find("#job-aoi_geometry-file").send_keys(str(upload))
    portal.wait(lambda: "FeatureCollection" in portal.find("#job-aoi_geometry").get_attribute("value"), what="the file")
    assert "km²" in portal.find("#process-map-summary").text  # drawn on the map too
    set_value(portal, "#job-output_name", "portal_double_click")
    with portal_server.sdk() as client:
        reserves_before = sum(1 for e in client.credits.ledger(DEMO_PROJECT) if e.kind == 2)
        held_before = client.credits.balance(DEMO_PROJECT).held
    # The price is quoted before the spend (validate_only) and the quote holds nothing.
    quoted = portal.wait(lambda: portal.find("#process-cost .estimate").get_attribute("data-credits"), 30, "the quote")
    assert "nothing reserved" in portal.find("#process-cost").text
    with portal_server.sdk() as client:
        assert sum(1 for e in client.credits.ledger(DEMO_PROJECT) if e.kind == 2) == reserves_before
        assert client.credits.balance(DEMO_PROJECT).held == held_before
    ActionChains(portal.driver).double_click(portal.find("#job button[type=submit]")).perform()
    created = portal.wait(lambda: portal.find(".job-created[data-job-id]"), 30, "the created job")
    time.sleep(2)  # room for a second request, were one sent
    with portal_server.sdk() as client:
        jobs = [j for j in client.jobs.list(DEMO_PROJECT, job_type_id="clip", view="full")
                if j.input_params["output_name"] == "portal_double_click"]  # fmt: skip
        reserves = [e for e in client.credits.ledger(DEMO_PROJECT) if e.kind == 2]
    assert [j.id for j in jobs] == [created.get_attribute("data-job-id")]
    assert len(reserves) == reserves_before + 1
    assert reserves[0].job_id == jobs[0].id and reserves[0].amount == int(quoted)


@pytest.mark.parametrize("viewport", ["desktop", "phone"])
def test_a_job_is_cancelled_from_the_list_and_its_hold_released(portal, portal_server, viewport):
    item_id = demo_items(portal_server)["s2l1c_slovenia_20150909_bgrn"]
    with portal_server.sdk() as client:
        held_before = client.credits.balance(DEMO_PROJECT).held
        job = client.jobs.create(DEMO_PROJECT, "clip", {"source_item_id": item_id, "aoi_geometry": AOI,
                                                        "output_name": f"portal_cancel_{viewport}"})  # fmt: skip
        assert client.credits.balance(DEMO_PROJECT).held == held_before + job.credits_reserved
    open_page(portal, portal_server, "#/jobs", "jobs")
    row = f'tr[data-job-id="{job.id}"]'
    portal.wait(lambda: portal.find(f"{row}[data-status=pending]"), what="the pending job")
    portal.find(f"{row} .cancel-job").click()
    portal.wait(lambda: portal.find(f"{row}[data-status=cancelled]"), 30, "the job to be cancelled")
    portal.screenshot("cancelled")
    # The filters ask the server for that status / type only.
    set_value(portal, "#jobs-status", "cancelled")
    portal.wait(
        lambda: (
            portal.find("#jobs-info").text != ""
            and all(r.get_attribute("data-status") == "cancelled" for r in portal.find_all("#jobs-body tr"))
        ),
        what="the filter",
    )
    assert portal.find_all(row)
    set_value(portal, "#jobs-status", "succeeded")
    portal.wait(lambda: not portal.find_all(row), what="the cancelled job to leave the list")
    set_value(portal, "#jobs-type", "bathymetry")
    portal.wait(lambda: all(r.find_element("css selector", "td:nth-child(2)").text == "bathymetry"
                            for r in portal.find_all("#jobs-body tr")), what="the type filter")  # fmt: skip
    with portal_server.sdk() as client:
        assert client.jobs.get(job.id).status_name == "CANCELLED"
        assert client.credits.balance(DEMO_PROJECT).held == held_before


def test_a_plugin_method_gets_a_working_form_with_no_portal_change(portal, portal_server):
    """pixel_count exists only where the test server loads tests.support.analytics_plugins."""
    item_id = demo_items(portal_server)["s2l1c_slovenia_20150711_bgrn"]
    open_page(portal, portal_server, "#/analytics", "analytics")
    choose_method(portal, "pixel_count")
    set_value(portal, "#method-pixel_count-item_id", item_id)
    run_form(portal, "pixel_count")
    portal.wait(lambda: portal.find("#analytics-result[data-operation=pixel_count]"), 60, "the plugin's result")
    with portal_server.sdk() as client:
        expected = client.analytics.execute("pixel_count", {"item_id": item_id}).result
    shown = result_cells(portal)
    assert shown == {key: expected[key] for key in ("item_id", "width", "height", "pixels", "bands")}


def test_a_job_of_another_registered_type_is_created_from_its_schema_form(portal, portal_server):
    item_id = demo_items(portal_server)["s2l1c_slovenia_20150711_bgrn"]
    open_page(portal, portal_server, "#/process", "process")
    set_value(portal, "#job-type", "bathymetry")
    portal.wait(lambda: portal.find("#job-m0"), what="the bathymetry form")
    set_value(portal, "#job-source_item_id", item_id)
    set_value(portal, "#job-m0", "52.08")
    set_value(portal, "#job-m1", "54.9")
    # The demo patch has no open water: the land mask off, as in the README's example.
    set_value(portal, "#job-land_ndwi_threshold", "-1")
    set_value(portal, "#job-output_name", "portal_bathymetry")
    quoted = portal.wait(lambda: portal.find("#process-cost .estimate").get_attribute("data-credits"), 30, "the quote")
    portal.find("#job button[type=submit]").click()
    created = portal.wait(lambda: portal.find(".job-created[data-job-id]"), 30, "the created job")
    portal.wait(lambda: portal.find("#process-outcome [data-status=succeeded]"), 90, "the job to succeed")
    with portal_server.sdk() as client:
        job = client.jobs.get(created.get_attribute("data-job-id"))
    assert job.job_type_id == "bathymetry" and job.credits_reserved == int(quoted)
    typed = {"m0": 52.08, "m1": 54.9, "land_ndwi_threshold": -1, "output_name": "portal_bathymetry"}
    assert dict(job.input_params) == {"source_item_id": item_id, **typed}
    portal.screenshot("bathymetry", full_page=True)


def test_a_time_series_is_drawn_as_a_line_chart_of_the_grpc_steps(portal, portal_server):
    stack = demo_items(portal_server)["s2l1c_slovenia_ndvi_68dates"]
    open_page(portal, portal_server, "#/analytics", "analytics")
    choose_method(portal, "time_series")
    set_value(portal, "#method-time_series-item_id", stack)
    set_value(portal, "#method-time_series-geometry", json.dumps(AOI))
    set_value(portal, "#method-time_series-reducer", "median")
    run_form(portal, "time_series")
    portal.wait(lambda: portal.find("#analytics-result[data-operation=time_series]"), 60, "the time series")
    params = {"item_id": stack, "geometry": AOI, "reducer": "median"}
    with portal_server.sdk() as client:
        steps = client.analytics.execute("time_series", params)["steps"]
    dots = portal.js(
        "return [...document.querySelectorAll('#analytics-result svg .dot')]"
        ".map(d => [d.dataset.x, Number(d.dataset.y)])"
    )
    valid = [s for s in steps if s["value"] is not None]
    assert len(dots) == len(valid) > 10
    assert [y for _, y in dots] == [s["value"] for s in valid]
    assert [x[:19] for x, _ in dots] == [s["datetime"][:19] for s in valid]
    portal.screenshot("time-series", full_page=True)


def test_a_token_without_the_spend_scope_is_told_which_scope_it_lacks(portal, portal_server):
    portal.allow_console(r"status of 403")
    _, token = portal_server.make_token(["catalog:read", "processing:read"])
    item_id = demo_items(portal_server)["s2l1c_slovenia_20150711_bgrn"]
    with portal_server.sdk() as client:
        jobs_before = len(list(client.jobs.list(DEMO_PROJECT)))
    portal.sign_in(token)
    portal.go("#/process")
    portal.wait_ready("process")
    set_value(portal, "#job-source_item_id", item_id)
    set_value(portal, "#job-aoi_geometry", json.dumps(AOI))
    quote = "#process-cost .estimate"
    portal.wait(lambda: portal.find(quote).get_attribute("data-reason") == "MISSING_SCOPE", 30, "the quote refused")
    portal.find("#job button[type=submit]").click()
    banner = portal.wait(lambda: portal.visible("#banner-text"), 30, "the message")
    assert "processing:process" in banner.text
    with portal_server.sdk() as client:
        assert len(list(client.jobs.list(DEMO_PROJECT))) == jobs_before
    portal.screenshot("missing-scope", full_page=True)
