"""Annotated images: a box per detection with a ``name 0.87`` tag filled in the box's colour."""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import ArrayLike
from PIL import Image, ImageColor, ImageDraw, ImageFont

from ..errors import DataError

# 20 distinct colours (Sasha Trubetskoy's list), assigned to classes in label order by class_colors().
PALETTE = (
    "#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45", "#fabed4", "#469990",
    "#dcbeff", "#9a6324", "#fffac8", "#800000", "#aaffc3", "#808000", "#ffd8b1", "#000075", "#a9a9a9", "#ffe119",
)  # fmt: skip


def parse_color(value: str, class_name: str) -> tuple[int, int, int]:
    """``value`` (a colour name or ``#rrggbb``) as RGB; DataError naming the class when it is not a colour."""
    try:
        return ImageColor.getrgb(value)[:3]
    except (ValueError, AttributeError):
        raise DataError(
            f"inference.color_map: {value!r} for class {class_name!r} is not a colour; write a colour name such as "
            "'red' or 'dodgerblue', or a hex code such as '#ff8800'"
        ) from None


def class_colors(class_names: Sequence[str], color_map: Mapping[str, str] | None = None) -> dict[str, str]:
    """A colour for every class: ``color_map``'s where it names one, else the palette in label order (distinct for
    the first 20 classes). Checks every colour of ``color_map`` up front."""
    color_map = dict(color_map or {})
    for name, value in color_map.items():
        parse_color(value, name)
    return {name: color_map.get(name, PALETTE[label % len(PALETTE)]) for label, name in enumerate(class_names)}


def draw_detections(
    image: Image.Image,
    boxes: ArrayLike,
    scores: ArrayLike,
    names: Sequence[str],
    *,
    color_map: Mapping[str, str] | None = None,
    outline_width: int = 3,
) -> Image.Image:
    """A copy of ``image`` in RGB with the detections drawn on it.

    Args:
        image: any PIL mode (converted to RGB).
        boxes: [N, 4] ``x1, y1, x2, y2`` in the image's pixels.
        scores: [N] confidences, shown with 2 decimals.
        names: [N] class name of each box.
        color_map: colour per class name (a colour name or ``#rrggbb``); a class without one gets a palette
            colour picked from its name. Pass ``class_colors(all_names, color_map)`` for distinct colours.
        outline_width: box outline thickness in pixels.
    """
    canvas = image.convert("RGB")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=max(12, round(min(canvas.size) / 40)))
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    for (x1, y1, x2, y2), score, name in zip(boxes.tolist(), scores.tolist(), names, strict=True):
        color = parse_color((color_map or {}).get(name) or PALETTE[zlib.crc32(name.encode()) % len(PALETTE)], name)
        x1, x2 = sorted((x1, x2))
        y1, y2 = sorted((y1, y2))
        draw.rectangle((x1, y1, x2, y2), outline=color, width=outline_width)
        text = f"{name} {score:.2f}"
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        tag_w, tag_h = right - left + 4, bottom - top + 4
        tag_y = y1 - tag_h if y1 >= tag_h else y1  # above the box, or just inside it at the image's top
        draw.rectangle((x1, tag_y, x1 + tag_w, tag_y + tag_h), fill=color)
        draw.text((x1 + 2 - left, tag_y + 2 - top), text, fill=_text_color(color), font=font)
    return canvas


def _text_color(background: tuple[int, int, int]) -> str:
    """Black on light backgrounds, white on dark ones."""
    red, green, blue = background
    return "black" if 0.299 * red + 0.587 * green + 0.114 * blue > 140 else "white"


def draw_ground_truth(
    image: Image.Image,
    boxes: ArrayLike,
    names: Sequence[str],
    *,
    color_map: Mapping[str, str] | None = None,
    outline_width: int = 2,
    dash: int = 8,
) -> Image.Image:
    """A copy of ``image`` in RGB with ground-truth boxes drawn dashed, each with a white ``GT name`` tag below
    its bottom-left corner, so they read apart from :func:`draw_detections`' solid boxes with filled tags above.

    Args:
        boxes: [N, 4] ``x1, y1, x2, y2`` in the image's pixels.
        names: [N] class name of each box; colours as in :func:`draw_detections`.
        dash: length of the dashes (and gaps) in pixels.
    """
    canvas = image.convert("RGB")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=max(10, round(min(canvas.size) / 50)))
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    for (x1, y1, x2, y2), name in zip(boxes.tolist(), names, strict=True):
        color = parse_color((color_map or {}).get(name) or PALETTE[zlib.crc32(name.encode()) % len(PALETTE)], name)
        x1, x2 = sorted((x1, x2))
        y1, y2 = sorted((y1, y2))
        for start, end in (((x1, y1), (x2, y1)), ((x2, y1), (x2, y2)), ((x2, y2), (x1, y2)), ((x1, y2), (x1, y1))):
            _dashed_line(draw, start, end, color, outline_width, dash)
        text = f"GT {name}"
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        tag_w, tag_h = right - left + 4, bottom - top + 4
        tag_y = y2 if y2 + tag_h <= canvas.height else y2 - tag_h
        draw.rectangle((x1, tag_y, x1 + tag_w, tag_y + tag_h), fill="white", outline=color)
        draw.text((x1 + 2 - left, tag_y + 2 - top), text, fill="black", font=font)
    return canvas


def _dashed_line(
    draw: ImageDraw.ImageDraw,
    start: tuple[float, float],
    end: tuple[float, float],
    color: tuple[int, int, int],
    width: int,
    dash: int,
) -> None:
    length = float(np.hypot(end[0] - start[0], end[1] - start[1]))
    if length == 0:
        return
    for offset in np.arange(0, length, 2 * dash):
        a, b = offset / length, min(offset + dash, length) / length
        draw.line(
            (
                start[0] + (end[0] - start[0]) * a,
                start[1] + (end[1] - start[1]) * a,
                start[0] + (end[0] - start[0]) * b,
                start[1] + (end[1] - start[1]) * b,
            ),
            fill=color,
            width=width,
        )
