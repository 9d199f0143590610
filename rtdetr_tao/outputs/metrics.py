"""The metrics JSON of ``evaluate``: COCO metrics plus the caller's context (checkpoint, thresholds, ...)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..io import atomic_write_json
from .jsonable import jsonable

if TYPE_CHECKING:
    from ..eval.coco import CocoMetrics


def write_metrics(path: str | Path, metrics: CocoMetrics, context: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Write ``metrics.to_dict()`` (AP ... ARl, per_class, num_images, num_detections) followed by ``context``
    to ``path`` atomically as strict JSON; returns what was written."""
    data = metrics.to_dict()
    clash = sorted(set(context or {}) & set(data))
    if clash:
        raise ValueError(f"context keys {clash} would overwrite metrics")
    data.update(jsonable(dict(context or {})))
    atomic_write_json(path, data)
    return data
