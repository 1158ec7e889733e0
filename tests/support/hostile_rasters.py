"""Hostile raster files for the trust-boundary tests.

Each label is a small text file that GDAL, opened with every driver, reads as a georeferenced
64 x 64 byte raster whose pixels are the bytes of *another* file (``target``, a path relative
to the label's directory): exactly what an upload must not be able to do.
"""

from __future__ import annotations

from pathlib import Path

import rasterio
from rasterio.transform import from_origin

SIDE = 64  # the labels describe SIDE x SIDE bytes of the target


def pds3_label(target: str) -> bytes:
    """A PDS3 label whose ^IMAGE pointer names ``target``, with a map projection."""
    return f"""PDS_VERSION_ID = PDS3
RECORD_TYPE = FIXED_LENGTH
RECORD_BYTES = {SIDE}
FILE_RECORDS = {SIDE}
^IMAGE = ("{target}", 1)
OBJECT = IMAGE_MAP_PROJECTION
  MAP_PROJECTION_TYPE = "EQUIRECTANGULAR"
  A_AXIS_RADIUS = 6378.137 <KM>
  B_AXIS_RADIUS = 6378.137 <KM>
  C_AXIS_RADIUS = 6378.137 <KM>
  CENTER_LATITUDE = 0.0 <DEG>
  CENTER_LONGITUDE = 0.0 <DEG>
  LINE_FIRST_PIXEL = 1
  LINE_LAST_PIXEL = {SIDE}
  SAMPLE_FIRST_PIXEL = 1
  SAMPLE_LAST_PIXEL = {SIDE}
  MAP_SCALE = 0.1 <KM/PIXEL>
  LINE_PROJECTION_OFFSET = 32.0 <PIXEL>
  SAMPLE_PROJECTION_OFFSET = 32.0 <PIXEL>
END_OBJECT = IMAGE_MAP_PROJECTION
OBJECT = IMAGE
  LINES = {SIDE}
  LINE_SAMPLES = {SIDE}
  SAMPLE_TYPE = UNSIGNED_INTEGER
  SAMPLE_BITS = 8
  BANDS = 1
END_OBJECT = IMAGE
END
""".encode()


def ers_label(target: str) -> bytes:
    """An ER Mapper header (the ENVI-style "header + raw data file" kind) naming ``target``,
    georeferenced over the Slovenian sample scene (lon 14.5-14.564, lat 45.819-45.883)."""
    return f"""DatasetHeader Begin
	Version		= "6.0"
	DataFile	= "{target}"
	DataSetType	= ERStorage
	DataType	= Raster
	ByteOrder	= LSBFirst
	CoordinateSpace Begin
		Datum		= "WGS84"
		Projection	= "GEODETIC"
		CoordinateType	= LATLONG
	CoordinateSpace End
	RasterInfo Begin
		CellType	= Unsigned8BitInteger
		NrOfLines	= {SIDE}
		NrOfCellsPerLine	= {SIDE}
		CellInfo Begin
			Xdimension	= 0.001
			Ydimension	= 0.001
		CellInfo End
		RegistrationCoord Begin
			Longitude	= 14:30:00
			Latitude	= 45:53:00
		RegistrationCoord End
		NrOfBands	= 1
	RasterInfo End
DatasetHeader End
""".encode()


def vrt_raw(target: str) -> bytes:
    """A VRT (to be named .tif) with a raw band over ``target``."""
    return f"""<VRTDataset rasterXSize="{SIDE}" rasterYSize="{SIDE}">
  <SRS>EPSG:4326</SRS>
  <GeoTransform>14.5, 0.001, 0, 45.9, 0, -0.001</GeoTransform>
  <VRTRasterBand dataType="Byte" band="1" subClass="VRTRawRasterBand">
    <SourceFilename relativetoVRT="1">{target}</SourceFilename>
    <ImageOffset>0</ImageOffset>
    <PixelOffset>1</PixelOffset>
    <LineOffset>{SIDE}</LineOffset>
  </VRTRasterBand>
</VRTDataset>
""".encode()


LABELS = {"pds3": pds3_label, "ers": ers_label, "vrt-named-tif": vrt_raw}


def sparse_geotiff(path: Path, side: int = 20_000, *, bands: int = 1) -> Path:
    """A tiled, compressed GeoTIFF of ``side`` x ``side`` pixels with no tile written
    (SPARSE_OK): a few KB on disk, ``side``² pixels to decode."""
    profile = {
        "driver": "GTiff",
        "width": side,
        "height": side,
        "count": bands,
        "dtype": "uint8",
        "crs": "EPSG:32633",
        "transform": from_origin(465_000, 5_080_000, 10, 10),
        "tiled": True,
        "blockxsize": 512,
        "blockysize": 512,
        "compress": "zstd",
        "sparse_ok": True,
    }
    with rasterio.open(path, "w", **profile):
        pass
    return path
