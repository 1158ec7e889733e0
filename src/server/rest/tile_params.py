"""The query of a tile, preview or tilejson request as a `RenderSpec`, with the defaults
taken from what is drawn: the stored render hint (true colour for multi-band reflectance,
stretched from the embedded statistics), a diverging colour map centred on zero for a
change-detection difference, the band catalogue for `expression=NDVI` and the like.

Parameters (all optional, TiTiler's names):
- `bands`: comma-separated 1-based indexes or band names (`3,2,1`, `red,green,blue`, `B08`).
- `expression`: an index of the band catalogue (`NDVI`, `NDWI`, ...; bands found by name) or
  a rio-tiler expression over b1, b2, ... (`(b4-b3)/(b4+b3)`).
- `rescale`: `min,max`, once or once per band; default from the embedded statistics
  (an index: its value range; another expression: -1,1).
- `colormap`: a rio-tiler colour map name (one band only); an index defaults to `rdylgn`.
- `asset`: which asset of an item (default its first COG).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

from multidict import MultiMapping

from geopera_kernel.analytics.bands import normalize_common_name, resolve_bands
from geopera_kernel.analytics.indices import INDICES
from geopera_kernel.raster.render import RenderSpec, parse_ranges, symmetric_range
from geopera_kernel.raster.types import RenderHint, RescaleRange
from geopera_kernel.server.errors import DomainError, invalid_argument
from geopera_kernel.server.rest.query_numbers import whole_number

RENDER_PARAMS: Final = ("asset", "bands", "expression", "rescale", "colormap")
INDEX_COLORMAP: Final = "rdylgn"
DIFFERENCE_COLORMAP: Final = "rdbu"  # red = decrease, blue = increase, as the change quicklook
EXPRESSION_RESCALE: Final = (-1.0, 1.0)
_MAX_BANDS: Final = 3
_COMMON_NAME = re.compile(r"\b[a-z][a-z0-9]*\b")


def hint_of(render: Mapping[str, Any]) -> RenderHint:
    """The stored render hint (JSON shaped like the RenderHint proto) as the raster type."""
    ranges = [RescaleRange(float(r.get("min", 0.0)), float(r.get("max", 1.0))) for r in render.get("rescale", [])]
    return RenderHint(rescale=ranges, rgb_bands=[int(b) for b in render.get("rgb_bands", [])])


def render_spec(
    query: MultiMapping[str], hint: RenderHint, bands: Sequence[Mapping[str, Any]], *, diverging: bool
) -> RenderSpec:
    band_count = len(hint.rescale)
    rescale = parse_ranges(query.getall("rescale", []))
    colormap = query.get("colormap", "").strip()
    expression = query.get("expression", "").strip()
    if expression and query.get("bands"):
        raise invalid_argument("INVALID_BANDS", "give bands or expression, not both", field="bands")
    if expression:
        index = INDICES.get(expression.upper())
        if index is not None:
            expression = _index_expression(index.formula_text, index.bands, bands)
            rescale = rescale or (index.value_range or EXPRESSION_RESCALE,)
            colormap = colormap or INDEX_COLORMAP
        return RenderSpec(expression=expression, rescale=rescale or (EXPRESSION_RESCALE,), colormap=colormap)
    if query.get("bands"):
        indexes = _band_indexes(query["bands"], bands, band_count)
    elif diverging:
        return RenderSpec(
            indexes=(1,), rescale=rescale or (symmetric_range(hint),), colormap=colormap or DIFFERENCE_COLORMAP
        )
    elif colormap or band_count < 3:
        indexes = (1,)
    else:
        indexes = tuple(hint.rgb_bands) or (1, 2, 3)
    if not rescale:
        rescale = tuple((hint.rescale[i - 1].min, hint.rescale[i - 1].max) for i in indexes if 1 <= i <= band_count)
    return RenderSpec(indexes=indexes, rescale=rescale, colormap=colormap)


def _band_indexes(text: str, bands: Sequence[Mapping[str, Any]], band_count: int) -> tuple[int, ...]:
    tokens = [token.strip() for token in text.split(",")]
    if not 1 <= len(tokens) <= _MAX_BANDS or not all(tokens):
        raise invalid_argument("INVALID_BANDS", f"bands is 1 to {_MAX_BANDS} comma-separated bands", field="bands")
    indexes = []
    for token in tokens:
        index = whole_number(token)
        if index is not None:
            indexes.append(index)
            continue
        common = normalize_common_name(token)
        try:
            if common is not None:
                indexes.append(resolve_bands([common], bands)[common])
            else:
                indexes.append(resolve_bands([token.lower()], bands, {token.lower(): token})[token.lower()])
        except DomainError as err:
            raise invalid_argument("INVALID_BANDS", f"band {token!r}: {err.message}", field="bands") from None
    wrong = [i for i in indexes if not 1 <= i <= band_count]
    if wrong:
        raise invalid_argument(
            "INVALID_BANDS", f"band {wrong[0]} does not exist; the raster has bands 1..{band_count}", field="bands"
        )
    return tuple(indexes)


def _index_expression(formula: str, needs: Sequence[str], bands: Sequence[Mapping[str, Any]]) -> str:
    """The catalogue's formula over common names as a rio-tiler expression over b1, b2, ..."""
    try:
        found = resolve_bands(needs, bands)
    except DomainError as err:
        raise invalid_argument("INVALID_EXPRESSION", err.message, field="expression") from None
    text = _COMMON_NAME.sub(lambda m: f"b{found[m.group()]}" if m.group() in found else m.group(), formula)
    return text.replace("^", "**")
