from __future__ import annotations

import pytest

from geopera_kernel.raster import common_name_for, is_sensor_band_id


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("blue", "blue"),
        ("Red", "red"),
        ("NIR", "nir"),
        ("nir08", "nir08"),
        ("nir_narrow", "nir08"),
        ("Near-Infrared", "nir"),
        ("red edge", "rededge"),
        ("SWIR1", "swir16"),
        ("coastal aerosol", "coastal"),
        ("B01", "coastal"),
        ("B02", "blue"),
        ("b04", "red"),
        ("B05", "rededge"),
        ("B08", "nir"),
        ("B8A", "nir08"),
        ("B09", "nir09"),
        ("B10", "cirrus"),
        ("B11", "swir16"),
        ("B12", "swir22"),
        ("SR_B1", "coastal"),
        ("SR_B4", "red"),
        ("SR_B5", "nir08"),
        ("SR_B7", "swir22"),
        # Unpadded ids are ambiguous between Sentinel-2 and Landsat (B5 = rededge or nir08).
        ("B5", None),
        ("ndvi", None),
        ("", None),
    ],
)
def test_common_name_for(name: str, expected: str | None) -> None:
    assert common_name_for(name) == expected


def test_is_sensor_band_id() -> None:
    assert is_sensor_band_id("B8A")
    assert is_sensor_band_id("SR_B2")
    assert not is_sensor_band_id("nir")
