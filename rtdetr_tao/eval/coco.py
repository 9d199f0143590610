"""COCO bbox evaluation with pycocotools, on detections mapped back to the original category ids."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ..errors import DataError, SpecError
from ..progress import stage
from .detections import ImageDetections, coco_results

SUMMARY_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


@dataclass(frozen=True)
class CocoMetrics:
    """COCO bbox metrics, each in [0, 1], or -1 where COCO leaves it undefined (no ground truth of that
    area range, or of that class for ``per_class``).

    AP is averaged over IoU 0.50:0.95 (AP50 / AP75 at one IoU) with up to 100 detections per image;
    s/m/l are areas below 32², up to 96², above 96²; ARn is recall with up to n detections per image.
    ``per_class`` maps each evaluated category (by name, or id when it has none) to its AP.
    ``num_images`` counts the evaluated images (with or without detections), ``num_detections`` the
    detections on them in the evaluated categories.
    """

    AP: float
    AP50: float
    AP75: float
    APs: float
    APm: float
    APl: float
    AR1: float
    AR10: float
    AR100: float
    ARs: float
    ARm: float
    ARl: float
    per_class: dict[str, float] = field(default_factory=dict)
    num_images: int = 0
    num_detections: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Plain, strict-JSON data (all values are finite)."""
        return asdict(self)

    def kpi(self, prefix: str) -> dict[str, float]:
        """The status.json ``kpi`` entries, e.g. ``{"val_mAP": AP, "val_mAP50": AP50}`` for prefix ``val``."""
        return {f"{prefix}_mAP": self.AP, f"{prefix}_mAP50": self.AP50}

    def table(self) -> str:
        """A text table: the 12 summary metrics, then AP per class; undefined values show as ``n/a``."""

        def cell(value: float) -> str:
            return "n/a" if value < 0 else f"{value:.4f}"

        lines = [f"{key:<6} {cell(getattr(self, key)):>7}" for key in SUMMARY_KEYS]
        lines.append(f"images {self.num_images}, detections {self.num_detections}")
        if self.per_class:
            width = max(len("class"), *(len(name) for name in self.per_class))
            lines.append(f"{'class':<{width}}      AP")
            lines.extend(f"{name:<{width}} {cell(ap):>7}" for name, ap in self.per_class.items())
        return "\n".join(lines)


def coco_from_file(path: str | Path) -> COCO:
    """Load a COCO annotation file; a missing ``area`` becomes the bbox's ``w * h``, a missing ``iscrowd`` 0.

    Raises:
        DataError: the file is missing, not JSON, or lacks ``images`` / ``categories`` / annotation keys.
    """
    path = Path(path)
    try:
        dataset = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"COCO annotation file {path} does not exist; check the json_file path in the spec") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"COCO annotation file {path} is not readable JSON ({exc}); re-export or fix it") from None
    if not isinstance(dataset, dict):
        raise DataError(f"COCO annotation file {path} must hold a JSON object with 'images' and 'categories'")
    for key in ("images", "categories"):
        if not isinstance(dataset.get(key), list):
            raise DataError(f"COCO annotation file {path} has no '{key}' list; add it (see the COCO format)")
    dataset.setdefault("annotations", [])
    for index, ann in enumerate(dataset["annotations"]):
        missing = [key for key in ("id", "image_id", "category_id", "bbox") if key not in ann]
        if missing:
            raise DataError(f"COCO annotation file {path}: annotations[{index}] lacks {', '.join(missing)}")
        if not (isinstance(ann["bbox"], list) and len(ann["bbox"]) == 4):
            raise DataError(f"COCO annotation file {path}: annotations[{index}].bbox must be [x, y, w, h]")
        ann.setdefault("area", float(ann["bbox"][2]) * float(ann["bbox"][3]))
        ann.setdefault("iscrowd", 0)
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


@dataclass(frozen=True)
class CocoEvaluation:
    """:class:`CocoMetrics` plus what the report draws from: pycocotools' ``COCOeval`` after ``accumulate()``
    (``eval["precision"]`` is [T=10 IoUs, R=101 recalls, K classes, A=4 areas, M=3 max-dets]), the evaluated
    category ids in K order (sorted), their names, and the detections that were evaluated."""

    metrics: CocoMetrics
    evaluator: COCOeval
    category_ids: list[int]
    class_names: list[str]
    detections: list[ImageDetections]


def evaluate_coco(
    coco_gt: COCO, detections: Sequence[ImageDetections], label_to_category: Sequence[int], **kwargs: Any
) -> CocoMetrics:
    """COCO bbox metrics of ``detections`` against ``coco_gt``; the arguments of :func:`coco_evaluation`."""
    return coco_evaluation(coco_gt, detections, label_to_category, **kwargs).metrics


def coco_evaluation(
    coco_gt: COCO,
    detections: Sequence[ImageDetections],
    label_to_category: Sequence[int],
    *,
    category_names: Mapping[int, str] | None = None,
    eval_class_ids: Sequence[int] | None = None,
    image_ids: Sequence[int] | None = None,
    verbose: bool = False,
) -> CocoEvaluation:
    """COCO bbox evaluation of ``detections`` against ``coco_gt``.

    Args:
        coco_gt: ground truth with the original category ids (see :func:`coco_from_file`).
        detections: one record per image (merge ranks first with ``merge_detections``); images of
            ``image_ids`` without a record count as images without detections.
        label_to_category: original category id of each contiguous label, e.g. ``[1, 2, 3]``.
        category_names: names for ``per_class``; None: the names in ``coco_gt``.
        eval_class_ids: original category ids to evaluate; None: all categories of ``coco_gt``.
        image_ids: images to evaluate; None: all images of ``coco_gt``.
        verbose: let pycocotools print its progress and summary.
    """
    gt_image_ids = set(coco_gt.getImgIds())
    seen: set[int] = set()
    for image in detections:
        if image.image_id in seen:
            raise ValueError(f"image {image.image_id} has more than one detection record; merge them first")
        seen.add(image.image_id)
    eval_image_ids = sorted(gt_image_ids if image_ids is None else set(image_ids))
    unknown = (seen | set(eval_image_ids)) - gt_image_ids
    if unknown:
        raise ValueError(f"image ids not in the ground truth: {sorted(unknown)[:10]}")
    category_ids = sorted(coco_gt.getCatIds())
    if eval_class_ids is not None:
        outside = sorted(set(eval_class_ids) - set(category_ids))
        if outside or not eval_class_ids:
            raise SpecError(
                f"dataset.eval_class_ids={list(eval_class_ids)}: {outside or 'empty'} not among the annotation "
                f"file's category ids {category_ids}; list ids from its 'categories', or null for all"
            )
        category_ids = sorted(set(eval_class_ids))

    evaluated = set(eval_image_ids)
    results = coco_results([d for d in detections if d.image_id in evaluated], label_to_category)
    quiet = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    desc = f"COCO evaluation ({len(eval_image_ids)} images, {len(category_ids)} classes, {len(results)} detections)"
    with stage(desc), quiet:
        coco_dt = coco_gt.loadRes(results) if results else _empty_results(coco_gt)
        evaluator = COCOeval(coco_gt, coco_dt, iouType="bbox")
        evaluator.params.imgIds = eval_image_ids
        evaluator.params.catIds = category_ids
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()

    names = category_names or {cat["id"]: cat.get("name", str(cat["id"])) for cat in coco_gt.loadCats(category_ids)}
    per_class: dict[str, float] = {}
    class_names: list[str] = []
    for k, category_id in enumerate(category_ids):  # the order of COCOeval's K axis (sorted ids)
        name = str(names.get(category_id, category_id))
        key = name if name not in per_class else f"{name} (id {category_id})"
        per_class[key] = _mean_defined(evaluator.eval["precision"][:, :, k, 0, -1])
        class_names.append(key)
    stats = {key: float(value) for key, value in zip(SUMMARY_KEYS, evaluator.stats, strict=True)}
    counted = set(category_ids)
    num_detections = sum(1 for result in results if result["category_id"] in counted)
    metrics = CocoMetrics(**stats, per_class=per_class, num_images=len(eval_image_ids), num_detections=num_detections)
    evaluated_detections = [d for d in detections if d.image_id in evaluated]
    return CocoEvaluation(metrics, evaluator, category_ids, class_names, evaluated_detections)


def _empty_results(coco_gt: COCO) -> COCO:
    """A results set without detections (``COCO.loadRes`` fails on an empty list)."""
    empty = COCO()
    empty.dataset = {
        "images": coco_gt.dataset["images"],
        "categories": coco_gt.dataset["categories"],
        "annotations": [],
    }
    empty.createIndex()
    return empty


def _mean_defined(precision: np.ndarray) -> float:
    """Mean of the entries COCO defines (> -1), or -1 when there are none."""
    defined = precision[precision > -1]
    return float(defined.mean()) if defined.size else -1.0
