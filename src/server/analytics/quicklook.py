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


def colorize(values: np.ndarray, limit: float) -> np.ndarray:
    """(rows, cols) float -> (rows, cols, 4) RGBA; NaN is transparent; ±limit saturates."""
    lut = diverging_lut()
    limit = limit if limit > 0 else 1.0
    scaled = np.clip((np.nan_to_num(values, nan=0.0) + limit) / (2 * limit), 0.0, 1.0)
    index = np.round(scaled * (len(lut) - 1)).astype(np.intp)
    rgba = np.empty((*values.shape, 4), dtype=np.uint8)
    rgba[..., :3] = lut[index]
    rgba[..., 3] = np.where(np.isnan(values), 0, 255)
    return rgba


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _label(value: float) -> str:
    # ASCII only: Pillow's built-in font has no U+2212 minus sign.
    return f"{value:+.2f}" if value else "0"


def write_quicklook(path: Path, values: np.ndarray, limit: float, title: str) -> tuple[int, int]:
    """Write the map with a legend below it (colour bar, ticks at -limit..limit, title).

    Small maps are enlarged by an integer factor (nearest neighbour, pixels stay square and
    visible) so the longest side reaches about ``_MIN_SIDE``.
    """
    factor = max(1, _MIN_SIDE // max(values.shape))
    if factor > 1:
        values = np.repeat(np.repeat(values, factor, axis=0), factor, axis=1)
    rows, cols = values.shape
    width = max(cols, 320)
    image = Image.new("RGBA", (width, rows + _LEGEND_HEIGHT), (255, 255, 255, 255))
    image.paste(Image.fromarray(colorize(values, limit), "RGBA"), ((width - cols) // 2, 0))
    draw = ImageDraw.Draw(image)
    font = _font(11)
    bar_left, bar_right = _MARGIN + 8, width - _MARGIN - 8
    bar_top = rows + 20
    bar_bottom = bar_top + 12
    lut = diverging_lut(max(2, bar_right - bar_left))
    for offset, colour in enumerate(lut):
        x = bar_left + offset
        draw.line([(x, bar_top), (x, bar_bottom)], fill=(*(int(c) for c in colour), 255))
    draw.rectangle([bar_left, bar_top, bar_right, bar_bottom], outline=(60, 60, 60, 255))
    draw.text((bar_left, rows + 4), title, fill=(20, 20, 20, 255), font=font)
    for fraction in (0.0, 0.25, 0.5, 0.75, 1.0):
        x = round(bar_left + fraction * (bar_right - bar_left))
        draw.line([(x, bar_bottom), (x, bar_bottom + 4)], fill=(60, 60, 60, 255))
        text = _label((fraction * 2 - 1) * limit)
        text_width = draw.textlength(text, font=font)
        left = min(max(x - text_width / 2, 0), width - text_width)
        draw.text((left, bar_bottom + 6), text, fill=(20, 20, 20, 255), font=font)
    image.save(path, format="PNG", compress_level=1)  # a preview: speed over bytes
    return image.size
