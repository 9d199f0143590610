"""The COCO results file: :func:`~rtdetr_tao.eval.detections.coco_results` written atomically."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from ..eval.detections import ImageDetections, coco_results
from ..io import atomic_write_text


def write_coco_results(
    path: str | Path,
    detections: Iterable[ImageDetections],
    label_to_category: Sequence[int],
    *,
    file_names: Mapping[int, str] | None = None,
) -> int:
    """Write the COCO results of ``detections`` to ``path`` atomically (compact JSON); returns their number."""
    results = coco_results(detections, label_to_category, file_names)
    atomic_write_text(path, json.dumps(results, allow_nan=False) + "\n")
    return len(results)
