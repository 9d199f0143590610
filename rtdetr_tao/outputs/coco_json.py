"""COCO detection results: ``[{image_id, category_id, bbox: [x, y, w, h], score}]`` in original category ids."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..eval.detections import ImageDetections
from ..io import atomic_write_text


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


def write_coco_results(
    path: str | Path,
    detections: Iterable[ImageDetections],
    label_to_category: Sequence[int],
    *,
    file_names: Mapping[int, str] | None = None,
) -> int:
    """Write :func:`coco_results` to ``path`` atomically (compact JSON); returns the number of results."""
    results = coco_results(detections, label_to_category, file_names)
    atomic_write_text(path, json.dumps(results, allow_nan=False) + "\n")
    return len(results)
