"""Annotated images: outline colour, label tag, colour parsing, any input mode."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from rtdetr_tao.errors import DataError
from rtdetr_tao.outputs.draw import PALETTE, class_colors, draw_detections

RED = (255, 0, 0)


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "P", "I;16"])
def test_outline_and_tag(mode: str) -> None:
    image = Image.new("RGB", (200, 160), (40, 40, 40)).convert(mode)
    out = draw_detections(image, [[20, 60, 120, 140]], [0.87], ["car"], color_map={"car": "#ff0000"}, outline_width=3)
    assert out.mode == "RGB" and out.size == image.size and image.mode == mode  # a copy; the input is untouched
    pixels = np.asarray(out)
    for x, y in [(20, 100), (22, 100), (120, 100), (70, 140), (70, 138)]:  # left, right and bottom edges
        assert tuple(pixels[y, x]) == RED, (x, y)
    assert tuple(pixels[100, 70]) != RED and tuple(pixels[100, 24]) != RED  # inside the box, past the outline

    tag = pixels[40:60, 20:120].reshape(-1, 3)  # the tag sits right above the box
    red = np.all(tag == RED, axis=1).mean()
    white = np.all(tag > 200, axis=1).mean()
    assert red > 0.2 and white > 0.02  # a red tag with white "car 0.87" text


def test_tag_moves_inside_a_box_at_the_top() -> None:
    out = np.asarray(draw_detections(Image.new("RGB", (100, 100)), [[10, 0, 90, 80]], [0.5], ["dog"]))
    assert (out[1:12, 12:50] != 0).any(axis=2).mean() > 0.5


def test_palette_colours() -> None:
    colors = class_colors(["a", "b", "c"], {"b": "dodgerblue"})
    assert colors == {"a": PALETTE[0], "b": "dodgerblue", "c": PALETTE[2]}
    assert len(set(class_colors([f"class{i}" for i in range(20)]).values())) == 20

    image = Image.new("RGB", (50, 50))
    first = np.asarray(draw_detections(image, [[5, 20, 45, 45]], [0.9], ["cat"], outline_width=2))
    second = np.asarray(draw_detections(image, [[5, 20, 45, 45]], [0.1], ["cat"], outline_width=2))
    assert tuple(first[30, 5]) == tuple(second[30, 5]) != (0, 0, 0)  # the same class keeps its colour


def test_unknown_colour_names_explain_the_format() -> None:
    with pytest.raises(DataError, match=r"'blurple' for class 'car'.*#ff8800"):
        class_colors(["car"], {"car": "blurple"})
    with pytest.raises(DataError, match="blurple"):
        draw_detections(Image.new("RGB", (10, 10)), [[0, 0, 5, 5]], [0.5], ["car"], color_map={"car": "blurple"})


def test_no_detections_and_reversed_corners() -> None:
    image = Image.new("RGB", (30, 30), (1, 2, 3))
    assert np.array_equal(np.asarray(draw_detections(image, np.zeros((0, 4)), [], [])), np.asarray(image))
    out = np.asarray(draw_detections(image, [[25, 25, 5, 15]], [0.5], ["x"], color_map={"x": "lime"}))
    assert tuple(out[20, 5]) == (0, 255, 0)
