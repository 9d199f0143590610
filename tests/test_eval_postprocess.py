"""numpy post-processing: top-k over Q×C, label/query decomposition, box scaling, letterbox inversion."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from rtdetr_tao.eval.postprocess import Letterbox, postprocess, postprocess_arrays, sigmoid, topk_indices


def _logit(p: float) -> float:
    return float(np.log(p / (1 - p)))


def test_hand_computed_example() -> None:
    # Q=3 queries, C=2 classes; flat index = q * C + c.
    logits = np.array([[[0.0, 2.0], [1.0, -1.0], [3.0, 0.5]]], np.float32)
    boxes = np.array([[[0.25, 0.25, 0.5, 0.5], [0.75, 0.5, 0.5, 1.0], [0.5, 0.5, 0.2, 0.4]]], np.float32)
    labels, pixels, scores = postprocess_arrays(logits, boxes, [(200, 100)], num_select=3)  # (w, h)
    # Ranked: 3.0 (q2, c0), 2.0 (q0, c1), 1.0 (q1, c0).
    np.testing.assert_array_equal(labels, [[0, 1, 0]])
    np.testing.assert_allclose(scores, [[1 / (1 + np.exp(-3)), 1 / (1 + np.exp(-2)), 1 / (1 + np.exp(-1))]], rtol=1e-6)
    np.testing.assert_allclose(pixels, [[[80, 30, 120, 70], [0, 0, 100, 50], [100, 0, 200, 100]]], atol=1e-4)
    assert labels.dtype == np.int64 and pixels.dtype == np.float32 and scores.dtype == np.float32


def test_equal_scores_keep_lower_flat_index_first() -> None:
    logits = np.zeros((1, 3, 2), np.float32)
    labels, _, scores = postprocess_arrays(logits, np.full((1, 3, 4), 0.5, np.float32), [(10, 10)], num_select=4)
    np.testing.assert_array_equal(labels, [[0, 1, 0, 1]])  # flat indices 0, 1, 2, 3
    np.testing.assert_array_equal(scores, np.full((1, 4), 0.5, np.float32))


@settings(max_examples=60, deadline=None)
@given(
    hnp.arrays(np.float32, st.tuples(st.integers(1, 3), st.integers(1, 40)), elements=st.integers(-3, 3).map(float)),
    st.data(),
)
def test_topk_matches_a_full_stable_sort(values: np.ndarray, data: st.DataObject) -> None:
    k = data.draw(st.integers(1, values.shape[1]))
    expected = np.argsort(-values, axis=1, kind="stable")[:, :k]
    np.testing.assert_array_equal(topk_indices(values, k), expected)


def test_matches_a_transcription_of_the_reference_post_processor() -> None:
    rng = np.random.default_rng(0)
    batch, queries, classes, k = 3, 50, 7, 20
    logits = rng.normal(size=(batch, queries, classes)).astype(np.float32) * 4
    boxes = rng.uniform(0.05, 0.95, size=(batch, queries, 4)).astype(np.float32)
    sizes = np.array([(640, 480), (333, 517), (1, 1)])
    labels, pixels, scores = postprocess_arrays(logits, boxes, sizes, num_select=k)

    # The reference: convert and scale every query's box, sigmoid, top-k over the flattened scores, gather.
    cx, cy, w, h = np.moveaxis(boxes.astype(np.float64), -1, 0)
    all_boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1) * np.tile(sizes, 2)[:, None, :]
    flat_scores = 1 / (1 + np.exp(-logits.astype(np.float64).reshape(batch, -1)))
    index = np.argsort(-flat_scores, axis=1, kind="stable")[:, :k]
    np.testing.assert_array_equal(labels, index % classes)
    np.testing.assert_allclose(scores, np.take_along_axis(flat_scores, index, 1), rtol=1e-6)
    np.testing.assert_allclose(pixels, np.take_along_axis(all_boxes, (index // classes)[..., None], 1), rtol=1e-5)


def test_postprocess_keeps_image_ids_per_row() -> None:
    logits = np.zeros((2, 4, 3), np.float32)
    boxes = np.full((2, 4, 4), 0.5, np.float32)
    records = postprocess(logits, boxes, [(100, 50), (30, 60)], [17, 3], num_select=5)
    assert [r.image_id for r in records] == [17, 3]
    assert all(len(r) == 5 for r in records)
    np.testing.assert_allclose(records[1].boxes[0], [7.5, 15, 22.5, 45])
    with pytest.raises(ValueError, match="image ids"):
        postprocess(logits, boxes, [(100, 50), (30, 60)], [17], num_select=5)


@pytest.mark.parametrize(
    ("letterbox", "orig_size"),
    [
        (Letterbox.fit((200, 100), (64, 64)), (200, 100)),  # padded bottom: resized to 64 x 32
        (Letterbox.fit((90, 300), (64, 96)), (90, 300)),  # padded right
        (Letterbox((64, 64), (64, 32), offset=(0, 16)), (200, 100)),  # centred
    ],
)
def test_letterbox_inversion(letterbox: Letterbox, orig_size: tuple[int, int]) -> None:
    original = np.array([20.0, 10.0, 80.0, 60.0])
    factor = np.tile(np.array(letterbox.resized_size) / np.array(orig_size), 2)
    canvas = original * factor + np.tile(letterbox.offset, 2)  # where the box lies in the network input
    x1, y1, x2, y2 = canvas / np.tile(letterbox.input_size, 2)
    normalised = np.array([[[(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1]]], np.float32)
    _, pixels, _ = postprocess_arrays(
        np.ones((1, 1, 1), np.float32), normalised, [orig_size], num_select=1, letterboxes=[letterbox]
    )
    np.testing.assert_allclose(pixels[0, 0], original, atol=1e-3)


def test_letterbox_fit() -> None:
    assert Letterbox.fit((200, 100), (64, 64)) == Letterbox((64, 64), (64, 32), (0, 0))
    assert Letterbox.fit((100, 300), (640, 640)).resized_size == (213, 640)


def test_sigmoid_is_float32_and_overflow_free() -> None:
    x = np.array([-1000, -89, -20, -1, 0, 1, 20, 89, 1000, np.inf, -np.inf], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = sigmoid(x)
    assert result.dtype == np.float32
    with np.errstate(over="ignore"):
        expected = 1 / (1 + np.exp(-x.astype(np.float64)))
    np.testing.assert_allclose(result, expected, rtol=1e-6, atol=1e-30)


def test_nan_logits_rank_last_and_half_precision_inputs_work() -> None:
    logits = np.array([[[np.nan, _logit(0.9)], [_logit(0.2), np.nan]]], np.float16)
    labels, _, scores = postprocess_arrays(logits, np.full((1, 2, 4), 0.5, np.float16), [(8, 8)], num_select=4)
    np.testing.assert_array_equal(labels[0, :2], [1, 0])
    np.testing.assert_allclose(scores[0], [0.9, 0.2, 0, 0], atol=1e-3)


def test_bad_arguments() -> None:
    logits, boxes = np.zeros((1, 2, 3), np.float32), np.zeros((1, 2, 4), np.float32)
    with pytest.raises(ValueError, match="num_select"):
        postprocess_arrays(logits, boxes, [(8, 8)], num_select=7)
    with pytest.raises(ValueError, match="orig_sizes"):
        postprocess_arrays(logits, boxes, [8, 8], num_select=1)
    with pytest.raises(ValueError, match="pred_boxes"):
        postprocess_arrays(logits, boxes[:, :1], [(8, 8)], num_select=1)
