"""The detection record every producer (PyTorch, ONNX Runtime, TensorRT) hands to the writers and to COCO eval.

Torch-free: a tensor is accepted wherever an array is (it is converted with ``np.asarray``; move it to the
CPU first).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike


@dataclass(frozen=True, eq=False, init=False)
class ImageDetections:
    """Detections of one image, in the image's original pixels.

    Attributes:
        image_id: the COCO ``id`` of the image (never a position in a batch or list).
        boxes: [N, 4] float32, ``x1, y1, x2, y2`` in original-image pixels.
        scores: [N] float32 confidences in [0, 1].
        labels: [N] int64 contiguous training labels (map to category ids with ``label_to_category``).
    """

    image_id: int
    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray

    def __init__(self, image_id: int, boxes: ArrayLike, scores: ArrayLike, labels: ArrayLike) -> None:
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        scores = np.asarray(scores, dtype=np.float32).reshape(-1)
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        if not len(boxes) == len(scores) == len(labels):
            raise ValueError(
                f"image {image_id}: {len(boxes)} boxes, {len(scores)} scores and {len(labels)} labels differ in length"
            )
        object.__setattr__(self, "image_id", int(image_id))
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "labels", labels)

    @classmethod
    def empty(cls, image_id: int) -> ImageDetections:
        """An image without detections (it still counts in evaluation and gets an empty label file)."""
        return cls(image_id, np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))

    def __len__(self) -> int:
        return len(self.scores)

    def filter(self, conf_threshold: float) -> ImageDetections:
        """Keep detections with ``score >= conf_threshold`` (0 keeps all); the image id stays."""
        keep = self.scores >= conf_threshold
        return ImageDetections(self.image_id, self.boxes[keep], self.scores[keep], self.labels[keep])


def merge_detections(parts: Iterable[Iterable[ImageDetections]]) -> list[ImageDetections]:
    """Join the detections gathered from several ranks: one record per image id, sorted by image id.

    A distributed sampler pads its last batch by repeating images, so the same id can arrive twice;
    the first record of each id is kept.
    """
    merged: dict[int, ImageDetections] = {}
    for part in parts:
        for detections in part:
            merged.setdefault(detections.image_id, detections)
    return [merged[image_id] for image_id in sorted(merged)]


def coco_results(
    detections: Iterable[ImageDetections],
    label_to_category: Sequence[int],
    file_names: Mapping[int, str] | None = None,
) -> list[dict[str, Any]]:
    """One COCO result per detection; ``label_to_category[label]`` is the original ``category_id``.

    Boxes are ``[x1, y1, x2 - x1, y2 - y1]`` in original pixels, unrounded. ``file_names`` (image id → file) adds
    each result's ``file_name`` (images without an id of their own, such as inference folders).
    """
    results: list[dict[str, Any]] = []
    for image in detections:
        if len(image) and not 0 <= image.labels.min() <= image.labels.max() < len(label_to_category):
            raise ValueError(
                f"image {image.image_id}: labels {sorted(set(image.labels.tolist()))} do not fit "
                f"label_to_category of length {len(label_to_category)}"
            )
        for (x1, y1, x2, y2), score, label in zip(
            image.boxes.tolist(), image.scores.tolist(), image.labels.tolist(), strict=True
        ):
            result = {
                "image_id": image.image_id,
                "category_id": int(label_to_category[label]),
                "bbox": [x1, y1, x2 - x1, y2 - y1],
                "score": score,
            }
            if file_names is not None:
                result["file_name"] = file_names[image.image_id]
            results.append(result)
    return results
