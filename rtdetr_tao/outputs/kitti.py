"""KITTI label files as TAO's inference writes them, one per image.

Each detection is one line::

    class 0.00 0 0.00 x1 y1 x2 y2 0.00 0.00 0.00 0.00 0.00 0.00 0.00 score

with the box in original pixels and box and score to 3 decimals. KITTI fields are separated by whitespace,
so whitespace inside a class name becomes ``_`` (``traffic light`` → ``traffic_light``). An image without
detections gets an empty file.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from ..errors import DataError
from ..eval.detections import ImageDetections
from ..io import atomic_write_text


def kitti_class_name(name: str) -> str:
    """``name`` with each whitespace character replaced by ``_``."""
    return re.sub(r"\s", "_", name)


def format_kitti(detections: ImageDetections, class_names: Sequence[str]) -> str:
    """The KITTI label file text for one image (``""`` without detections); ``class_names[label]`` names a box."""
    lines = []
    for (x1, y1, x2, y2), score, label in zip(
        detections.boxes.tolist(), detections.scores.tolist(), detections.labels.tolist(), strict=True
    ):
        if not 0 <= label < len(class_names):
            raise DataError(
                f"label {label} has no class name: the classmap lists {len(class_names)} names (line 1 is label 0); "
                "add the missing names"
            )
        lines.append(
            f"{kitti_class_name(class_names[label])} 0.00 0 0.00 {x1:.3f} {y1:.3f} {x2:.3f} {y2:.3f} "
            f"0.00 0.00 0.00 0.00 0.00 0.00 0.00 {score:.3f}\n"
        )
    return "".join(lines)


def write_kitti(path: str | Path, detections: ImageDetections, class_names: Sequence[str]) -> None:
    """Write :func:`format_kitti` to ``path`` atomically (an empty file for an image without detections)."""
    atomic_write_text(path, format_kitti(detections, class_names))
