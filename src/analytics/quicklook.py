"""PNG quicklooks: a diverging colour map centred on 0 with a colour-bar legend (Pillow)."""

from __future__ import annotations

from pathlib import Path
from typing import Final

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# ColorBrewer RdBu (11 classes), low (red: decrease) to high (blue: increase).
_RDBU: Final = np.array(
    [
        (103, 0, 31),
        (178, 24, 43),
        (214, 96, 77),
        (244, 165, 130),
        (253, 219, 199),
        (247, 247, 247),
        (209, 229, 240),
        (146, 197, 222),
        (67, 147, 195),
        (33, 102, 172),
        (5, 48, 97),
    ],
    dtype=np.float64,
)
_LEGEND_HEIGHT: Final = 64
_MARGIN: Final = 12
_MIN_SIDE: Final = 512


def diverging_lut(size: int = 256) -> np.ndarray:
    """(size, 3) uint8 RdBu-like colours, linearly interpolated between the ColorBrewer stops."""
    stops = np.linspace(0.0, 1.0, len(_RDBU))
    positions = np.linspace(0.0, 1.0, size)
    channels = [np.interp(positions, stops, _RDBU[:, c]) for c in range(3)]
    return np.clip(np.round(np.column_stack(channels)), 0, 255).astype(np.uint8)


# Palette layout of the quicklook (a palette PNG: a quarter of RGBA's bytes to compress).
_MAP_COLOURS: Final = 250  # entries 0..249: the colour map
_WHITE: Final = 250
_TEXT: Final = 251
_OUTLINE: Final = 252
_TRANSPARENT: Final = 255


def colour_indexes(values: np.ndarray, limit: float) -> np.ndarray:
    """(rows, cols) float -> uint8 palette indexes: the colour map for ±limit (saturating
    beyond), ``_TRANSPARENT`` for NaN."""
    limit = limit if limit > 0 else 1.0
    scale = (_MAP_COLOURS - 1) / (2 * limit)
    scaled = np.clip((values + limit) * scale, 0.0, _MAP_COLOURS - 1)  # NaN stays NaN
    index = np.rint(np.nan_to_num(scaled, nan=0.0)).astype(np.uint8)
    index[np.isnan(values)] = _TRANSPARENT
    return index


def _palette() -> list[int]:
    entries = np.zeros((256, 3), dtype=np.uint8)
    entries[:_MAP_COLOURS] = diverging_lut(_MAP_COLOURS)
    entries[_WHITE] = (255, 255, 255)
    entries[_TEXT] = (20, 20, 20)
    entries[_OUTLINE] = (60, 60, 60)
    return entries.reshape(-1).tolist()


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _label(value: float) -> str:
    # ASCII only: Pillow's built-in font has no U+2212 minus sign.
    return f"{value:+.2f}" if value else "0"


def write_quicklook(path: Path, values: np.ndarray, limit: float, title: str) -> tuple[int, int]:
    """Write the map with a legend below it (colour bar, ticks at -limit..limit, title) as a
    palette PNG whose NaN pixels are transparent.

    Small maps are enlarged by an integer factor (nearest neighbour, pixels stay square and
    visible) so the longest side reaches about ``_MIN_SIDE``.
    """
    factor = max(1, _MIN_SIDE // max(values.shape))
    indexes = colour_indexes(values, limit)
    if factor > 1:
        indexes = np.repeat(np.repeat(indexes, factor, axis=0), factor, axis=1)
    rows, cols = indexes.shape
    width = max(cols, 320)
    bar_left, bar_right = _MARGIN + 8, width - _MARGIN - 8
    bar_top = rows + 20
    bar_bottom = bar_top + 12
    canvas = np.full((rows + _LEGEND_HEIGHT, width), _WHITE, dtype=np.uint8)
    canvas[:rows, (width - cols) // 2 : (width - cols) // 2 + cols] = indexes
    canvas[bar_top:bar_bottom, bar_left:bar_right] = np.rint(
        np.linspace(0, _MAP_COLOURS - 1, bar_right - bar_left)
    ).astype(np.uint8)
    image = Image.frombytes("P", (width, rows + _LEGEND_HEIGHT), canvas.tobytes())
    image.putpalette(_palette())
    draw = ImageDraw.Draw(image)
    font = _font(11)
    draw.rectangle([bar_left, bar_top, bar_right, bar_bottom], outline=_OUTLINE)
    draw.text((bar_left, rows + 4), title, fill=_TEXT, font=font)
    for fraction in (0.0, 0.25, 0.5, 0.75, 1.0):
        x = round(bar_left + fraction * (bar_right - bar_left))
        draw.line([(x, bar_bottom), (x, bar_bottom + 4)], fill=_OUTLINE)
        text = _label((fraction * 2 - 1) * limit)
        text_width = draw.textlength(text, font=font)
        left = min(max(x - text_width / 2, 0), width - text_width)
        draw.text((left, bar_bottom + 6), text, fill=_TEXT, font=font)
    image.save(path, format="PNG", compress_level=1, transparency=_TRANSPARENT)  # a preview: speed over bytes
    return image.size
