"""RT-DETR post-processing in numpy: raw ``pred_logits`` / ``pred_boxes`` → top-k detections in original pixels.

The same computation as the reference post-processor with focal loss (``use_focal_loss=True``):

1. ``scores = sigmoid(pred_logits)`` over all ``Q × C`` query/class pairs of an image, flattened
   query-major (flat index ``q * C + c``);
2. the ``num_select`` highest are kept, highest first; ``label = index % C``, ``query = index // C``;
3. the chosen query's box, normalised ``cx, cy, w, h``, becomes ``x1, y1, x2, y2`` and is scaled to pixels.

Conventions:

* **Sizes are (w, h)**, per image, like the reference's ``orig_target_sizes``.
* **Order**: by score, highest first; equal scores keep the lower flat index first. The ranking is done on
  the float32 logits (sigmoid is monotonic), so it does not depend on how a sigmoid implementation rounds;
  NaN logits rank last with score 0. Scores are ``sigmoid`` in float32.
* **Stretched input** (the default resize): ``pixels = xyxy_normalised * (w, h, w, h)`` in float32, exactly
  the reference's arithmetic.
* **Letterboxed input** (``preserve_aspect_ratio``): see :class:`Letterbox`; boxes are mapped from the
  padded network input back to the original image. Boxes are not clipped to the image in either case.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from .detections import ImageDetections


@dataclass(frozen=True)
class Letterbox:
    """Where an image sits in the network input when it was resized keeping its aspect ratio.

    All sizes are ``(w, h)`` in pixels. The original image was resized to ``resized_size`` and pasted with
    its top-left corner at ``offset`` into a canvas of ``input_size``; the rest is padding. RT-DETR's
    ``preserve_aspect_ratio`` pads bottom/right, i.e. ``offset == (0, 0)``. A point ``p`` of the canvas maps
    back to ``(p - offset) * orig_size / resized_size`` in the original image.
    """

    input_size: tuple[int, int]
    resized_size: tuple[int, int]
    offset: tuple[int, int] = (0, 0)

    @classmethod
    def fit(cls, orig_size: tuple[int, int], input_size: tuple[int, int]) -> Letterbox:
        """The largest aspect-preserving resize of ``orig_size`` into ``input_size`` (both (w, h)), padded
        bottom/right; the resized sides are rounded to whole pixels."""
        (width, height), (in_w, in_h) = orig_size, input_size
        scale = min(in_w / width, in_h / height)
        resized = (min(in_w, max(1, round(width * scale))), min(in_h, max(1, round(height * scale))))
        return cls((int(in_w), int(in_h)), resized)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Overflow-free float32 sigmoid, elementwise; for ``x >= 0`` the reference's ``1 / (1 + exp(-x))``."""
    x = np.asarray(x, dtype=np.float32)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(np.float32)


def cxcywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    """[..., 4] ``cx, cy, w, h`` → [..., 4] ``x1, y1, x2, y2`` (same operations as torchvision's box_convert)."""
    cx, cy, w, h = np.moveaxis(boxes, -1, 0)
    return np.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], axis=-1)


def topk_indices(values: np.ndarray, k: int) -> np.ndarray:
    """[B, n] → [B, k] int64 indices of each row's ``k`` largest values, largest first, ties by lower index."""
    order = np.empty((len(values), k), dtype=np.int64)
    for row, value in enumerate(values):
        negated = -value
        kth = np.partition(negated, k - 1)[k - 1]
        candidates = np.flatnonzero(negated <= kth)  # ascending, so the stable sort breaks ties by index
        order[row] = candidates[np.argsort(negated[candidates], kind="stable")[:k]]
    return order


def postprocess_arrays(
    pred_logits: ArrayLike,
    pred_boxes: ArrayLike,
    orig_sizes: ArrayLike,
    *,
    num_select: int,
    letterboxes: Sequence[Letterbox] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-``num_select`` detections of a batch.

    Args:
        pred_logits: [B, Q, C] class logits.
        pred_boxes: [B, Q, 4] normalised ``cx, cy, w, h`` (relative to the network input).
        orig_sizes: [B, 2] original image sizes as (w, h).
        num_select: detections kept per image, at most ``Q * C``.
        letterboxes: one :class:`Letterbox` per image when the input was letterboxed; None: stretched.

    Returns:
        ``(labels, boxes, scores)``: [B, K] int64, [B, K, 4] float32 xyxy original pixels, [B, K] float32.
    """
    logits = np.asarray(pred_logits, dtype=np.float32)
    boxes = np.asarray(pred_boxes, dtype=np.float32)
    sizes = np.asarray(orig_sizes, dtype=np.float32)
    if logits.ndim != 3 or boxes.shape != (*logits.shape[:2], 4):
        raise ValueError(f"expected pred_logits [B,Q,C] and pred_boxes [B,Q,4], got {logits.shape} and {boxes.shape}")
    batch, queries, classes = logits.shape
    if sizes.shape != (batch, 2):
        raise ValueError(f"expected orig_sizes [B,2] as (w, h) with B={batch}, got shape {sizes.shape}")
    if not 1 <= num_select <= queries * classes:
        raise ValueError(
            f"num_select={num_select} must be between 1 and num_queries x num_classes = {queries * classes}"
        )
    if letterboxes is not None and len(letterboxes) != batch:
        raise ValueError(f"expected {batch} letterboxes (one per image), got {len(letterboxes)}")

    flat = np.where(np.isnan(logits), -np.inf, logits).reshape(batch, queries * classes)
    index = topk_indices(flat, num_select)
    scores = sigmoid(np.take_along_axis(flat, index, axis=1))
    labels = index % classes
    chosen = np.take_along_axis(boxes, (index // classes)[..., None], axis=1)  # [B, K, 4]
    canvas, offset, factor = _to_pixels(sizes, letterboxes)
    pixels = (cxcywh_to_xyxy(chosen) * canvas - offset) * factor
    return labels, pixels.astype(np.float32), scores


def postprocess(
    pred_logits: ArrayLike,
    pred_boxes: ArrayLike,
    orig_sizes: ArrayLike,
    image_ids: Sequence[int],
    *,
    num_select: int,
    letterboxes: Sequence[Letterbox] | None = None,
) -> list[ImageDetections]:
    """:func:`postprocess_arrays` as one :class:`ImageDetections` per image (``image_ids[i]`` for row ``i``)."""
    labels, boxes, scores = postprocess_arrays(
        pred_logits, pred_boxes, orig_sizes, num_select=num_select, letterboxes=letterboxes
    )
    if len(image_ids) != len(labels):
        raise ValueError(f"expected {len(labels)} image ids (one per image), got {len(image_ids)}")
    return [ImageDetections(i, b, s, lab) for i, b, s, lab in zip(image_ids, boxes, scores, labels, strict=True)]


def _to_pixels(
    orig_sizes: np.ndarray, letterboxes: Sequence[Letterbox] | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-image ``canvas``, ``offset`` and ``factor``, each [B, 1, 4] float32, for
    ``pixels = (xyxy_normalised * canvas - offset) * factor``; stretched input: canvas = orig, 0, 1."""
    if letterboxes is None:
        canvas = orig_sizes
        offset = np.zeros_like(orig_sizes)
        factor = np.ones_like(orig_sizes)
    else:
        canvas = np.array([lb.input_size for lb in letterboxes], dtype=np.float32)
        offset = np.array([lb.offset for lb in letterboxes], dtype=np.float32)
        factor = orig_sizes / np.array([lb.resized_size for lb in letterboxes], dtype=np.float32)
    return _per_coordinate(canvas), _per_coordinate(offset), _per_coordinate(factor)


def _per_coordinate(size: np.ndarray) -> np.ndarray:
    """[B, 2] (x, y) values → [B, 1, 4] float32 for ``x1, y1, x2, y2``."""
    return np.tile(size, 2)[:, None, :].astype(np.float32)
