"""geopera_kernel.raster.render on its own: what a render spec accepts, and the renderer's
zoom floor and reader reuse."""

from __future__ import annotations

import threading

import pytest

from geopera_kernel.raster.domain_errors import DomainError
from geopera_kernel.raster.render import (
    RenderSpec,
    TileRenderer,
    check_expression,
    check_tile,
    parse_ranges,
    symmetric_range,
)
from geopera_kernel.raster.types import RenderHint, RescaleRange
from tests.conftest import SAMPLES

SAMPLE = str(SAMPLES / "s2l1c_slovenia_20150711_bgrn.tif")


def reason(call) -> str:
    with pytest.raises(DomainError) as info:
        call()
    return info.value.reason


@pytest.mark.parametrize("expression", ["b1", "(b4-b3)/(b4+b3)", "where(b1>0,b1,b2)", "sqrt(b1)*2.5", "b1**2"])
def test_expressions_numexpr_evaluates_per_pixel_are_accepted(expression):
    check_expression(expression)


@pytest.mark.parametrize(
    "expression",
    ["", "1+2", "b1;b2", "b1.real", "__import__('os')", "b01", "sum(b1)", "b1 and b2", "b1\nb2", "b" * 400, "b1[0]"],
)
def test_other_expressions_are_invalid(expression):
    assert reason(lambda: check_expression(expression)) == "INVALID_EXPRESSION"


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (RenderSpec(indexes=(5,)), "INVALID_BANDS"),
        (RenderSpec(indexes=(1, 2)), "INVALID_BANDS"),
        (RenderSpec(indexes=(1, 2, 3, 4)), "INVALID_BANDS"),
        (RenderSpec(expression="b7"), "INVALID_BANDS"),
        (RenderSpec(indexes=(1, 2, 3), rescale=((0, 1), (0, 1))), "INVALID_RESCALE"),
        (RenderSpec(indexes=(1,), colormap="nope"), "UNKNOWN_COLORMAP"),
        (RenderSpec(indexes=(1, 2, 3), colormap="viridis"), "COLORMAP_NEEDS_ONE_BAND"),
    ],
)
def test_specs_the_raster_cannot_honour_are_refused(spec, expected):
    assert reason(lambda: spec.check(4)) == expected


def test_digest_tells_specs_apart():
    one, other = RenderSpec(indexes=(3, 2, 1)), RenderSpec(indexes=(1, 2, 3))
    assert one.digest() == RenderSpec(indexes=(3, 2, 1)).digest() != other.digest()


@pytest.mark.parametrize(("z", "x", "y"), [(-1, 0, 0), (25, 0, 0), (2, 4, 0), (2, 0, -1)])
def test_tile_addresses_outside_the_matrix_are_invalid(z, x, y):
    assert reason(lambda: check_tile(z, x, y)) == "INVALID_TILE"


def test_ranges_parse_and_symmetric_ranges_centre_on_zero():
    assert parse_ranges(["0,1", "-2.5,3e3"]) == ((0.0, 1.0), (-2.5, 3000.0))
    for bad in ("1", "a,b", "2,1", "nan,1", "0,inf", "1,2,3"):
        assert reason(lambda bad=bad: parse_ranges([bad])) == "INVALID_RESCALE"
    hint = RenderHint(rescale=[RescaleRange(-0.2, 0.5)], rgb_bands=[])
    assert symmetric_range(hint) == (-0.5, 0.5)


def test_tiles_far_below_minzoom_are_refused_not_rendered():
    renderer = TileRenderer()
    tileset = renderer.tileset(SAMPLE)
    assert reason(lambda: renderer.tile(SAMPLE, tileset.minzoom - 4, 0, 0, RenderSpec(indexes=(1,)))) == (
        "TILE_OUTSIDE_ZOOMS"
    )


def test_readers_are_reused_per_thread_and_evicted_beyond_the_budget():
    renderer = TileRenderer(handles_per_thread=1)
    first = renderer._reader(SAMPLE)
    assert renderer._reader(SAMPLE) is first
    seen = []
    thread = threading.Thread(target=lambda: seen.append(renderer._reader(SAMPLE)))
    thread.start()
    thread.join()
    assert seen[0] is not first  # one reader per thread: rasterio datasets are not thread-safe
    other = str(SAMPLES / "s2l1c_slovenia_20150909_bgrn.tif")
    renderer._reader(other)
    assert first.dataset.closed
