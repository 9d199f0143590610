"""What the evaluation report shows beyond the COCO numbers: precision–recall curves straight from pycocotools'
``eval["precision"]``, a confusion matrix with a background row and column, precision / recall / F1 against the
score threshold, AP by object size, and the images with the most errors. Torch-free.

Matching (confusion matrix, threshold curve, per-image errors): crowd ground truth is left out; detections are
taken in descending score order and each takes the unmatched ground-truth box of its own class with the highest
IoU, if that IoU >= ``iou_threshold`` (COCO's greedy rule). For the confusion matrix the detections left over then
take, in the same order, the unmatched box of any class with the highest IoU >= ``iou_threshold`` (a class
confusion); what is still left is background.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from .coco import CocoEvaluation
from .detections import ImageDetections

AREAS = ("small", "medium", "large")  # COCOeval's area ranges 1..3 (0 is "all")


@dataclass(frozen=True)
class PRCurves:
    """Per-class precision at COCO's 101 recall points (``recall`` [101]); ``iou50`` and ``iou50_95`` are
    [K, 101], NaN where COCO leaves precision undefined (a class without ground truth)."""

    recall: np.ndarray
    iou50: np.ndarray
    iou50_95: np.ndarray


@dataclass(frozen=True)
class ThresholdCurve:
    """Precision, recall and F1 [T] of the detections with ``score >= thresholds`` [T] (all classes together);
    precision is NaN where no detection is left."""

    thresholds: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray

    @property
    def best(self) -> tuple[float, float]:
        """(threshold, F1) of the best F1; the lowest threshold on ties."""
        index = int(np.argmax(self.f1))
        return float(self.thresholds[index]), float(self.f1[index])


@dataclass(frozen=True)
class ImageErrors:
    """False positives and false negatives of one image at the confusion matrix's thresholds."""

    image_id: int
    false_positives: int
    false_negatives: int

    @property
    def total(self) -> int:
        return self.false_positives + self.false_negatives


@dataclass(frozen=True)
class Analysis:
    """Everything the report plots, for the classes ``class_names`` (ids ``category_ids``, COCOeval's K order).

    ``confusion`` is [K + 1, K + 1] counts: rows are the ground-truth class, columns the predicted class, the last
    row and column background (row K: detections without a box, column K: boxes without a detection).
    ``ap_by_size`` maps ``all`` and each class name to AP (0.50:0.95) per size in :data:`AREAS`, -1 when undefined.
    """

    class_names: list[str]
    category_ids: list[int]
    pr: PRCurves
    confusion: np.ndarray
    iou_threshold: float
    score_threshold: float
    curve: ThresholdCurve
    ap_by_size: dict[str, list[float]]
    image_errors: list[ImageErrors] = field(default_factory=list)

    @property
    def confusion_normalized(self) -> np.ndarray:
        """``confusion`` with each row divided by its sum (rows without entries stay 0)."""
        sums = self.confusion.sum(axis=1, keepdims=True)
        return np.divide(self.confusion, sums, out=np.zeros(self.confusion.shape), where=sums > 0)

    def worst_images(self, count: int) -> list[ImageErrors]:
        """Up to ``count`` images with errors, most errors first (ties: more false negatives, then lower id)."""
        ranked = sorted(self.image_errors, key=lambda e: (-e.total, -e.false_negatives, e.image_id))
        return [e for e in ranked if e.total > 0][:count]

    def to_dict(self) -> dict[str, Any]:
        """Plain data for ``report.json`` (NaN stays NaN: pass it through ``jsonable``)."""
        threshold, f1 = self.curve.best
        return {
            "classes": self.class_names,
            "confusion_matrix": {
                "iou_threshold": self.iou_threshold,
                "score_threshold": self.score_threshold,
                "rows": "ground truth class, then background",
                "columns": "predicted class, then background",
                "counts": self.confusion.tolist(),
            },
            "best_f1": {"threshold": threshold, "f1": f1},
            "ap_by_size": self.ap_by_size,
            "worst_images": [e.__dict__ for e in self.worst_images(len(self.image_errors))],
        }


def analyse(
    evaluation: CocoEvaluation,
    label_to_category: Sequence[int],
    *,
    iou_threshold: float = 0.5,
    score_threshold: float | None = None,
    thresholds: np.ndarray | None = None,
) -> Analysis:
    """The report's numbers for an evaluation.

    Args:
        evaluation: from :func:`rtdetr_tao.eval.coco.coco_evaluation`.
        label_to_category: category id of each contiguous label of the detections.
        iou_threshold: IoU of a match (confusion matrix, threshold curve, per-image errors).
        score_threshold: detections kept for the confusion matrix and per-image errors; None: the best-F1 threshold.
        thresholds: score thresholds of the curve; None: 0.00, 0.01, ..., 1.00.
    """
    coco_gt = evaluation.evaluator.cocoGt
    image_ids = list(evaluation.evaluator.params.imgIds)
    category_ids = evaluation.category_ids
    column = {category_id: k for k, category_id in enumerate(category_ids)}
    to_category = np.asarray(label_to_category, dtype=np.int64)
    by_image = {d.image_id: d for d in evaluation.detections}

    images = []
    for image_id in image_ids:
        anns = [
            a for a in coco_gt.imgToAnns.get(image_id, []) if not a.get("iscrowd", 0) and a["category_id"] in column
        ]
        gt_boxes = np.asarray([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
        gt_classes = np.asarray([column[a["category_id"]] for a in anns], dtype=np.int64)
        found = by_image.get(image_id, ImageDetections.empty(image_id))
        categories = to_category[found.labels] if len(found) else np.zeros(0, np.int64)
        keep = np.asarray([c in column for c in categories.tolist()], dtype=bool)
        order = np.argsort(-found.scores[keep], kind="stable")
        boxes = found.boxes[keep][order].astype(np.float64)
        det_boxes = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1) if len(boxes) else boxes
        det_classes = np.asarray([column[c] for c in categories[keep][order].tolist()], dtype=np.int64)
        images.append((image_id, gt_boxes, gt_classes, det_boxes, det_classes, found.scores[keep][order]))

    thresholds = np.round(np.linspace(0, 1, 101), 2) if thresholds is None else np.asarray(thresholds, np.float64)
    curve = threshold_curve(images, iou_threshold, thresholds)
    if score_threshold is None:
        score_threshold = curve.best[0]
    confusion = np.zeros((len(category_ids) + 1, len(category_ids) + 1), dtype=np.int64)
    errors = []
    for image_id, gt_boxes, gt_classes, det_boxes, det_classes, scores in images:
        kept = scores >= score_threshold
        counts, fp, fn = confusion_counts(
            gt_boxes, gt_classes, det_boxes[kept], det_classes[kept], len(category_ids), iou_threshold
        )
        confusion += counts
        errors.append(ImageErrors(image_id, fp, fn))
    return Analysis(
        class_names=list(evaluation.class_names),
        category_ids=list(category_ids),
        pr=pr_curves(evaluation.evaluator.eval["precision"]),
        confusion=confusion,
        iou_threshold=iou_threshold,
        score_threshold=float(score_threshold),
        curve=curve,
        ap_by_size=ap_by_size(evaluation.evaluator.eval["precision"], evaluation.class_names),
        image_errors=errors,
    )


def pr_curves(precision: np.ndarray) -> PRCurves:
    """Per-class PR curves from COCOeval's ``eval["precision"]`` [T, R, K, A, M] (area ``all``, the last max-dets):
    IoU 0.50 is T index 0; 0.50:0.95 is the mean over T of the defined values."""
    area_all = precision[:, :, :, 0, -1].astype(np.float64)  # [T, R, K]
    defined = np.where(area_all > -1, area_all, np.nan)
    iou50 = defined[0].T  # [K, R]
    with warnings.catch_warnings():  # "Mean of empty slice" for classes without ground truth
        warnings.simplefilter("ignore", RuntimeWarning)
        iou50_95 = np.nanmean(defined, axis=0).T
    return PRCurves(recall=np.linspace(0, 1, precision.shape[1]), iou50=iou50, iou50_95=iou50_95)


def ap_by_size(precision: np.ndarray, class_names: Sequence[str]) -> dict[str, list[float]]:
    """AP 0.50:0.95 per area range (small, medium, large) for all classes together and for each class."""

    def mean(values: np.ndarray) -> float:
        defined = values[values > -1]
        return round(float(defined.mean()), 6) if defined.size else -1.0

    result = {"all": [mean(precision[:, :, :, a, -1]) for a in (1, 2, 3)]}
    for k, name in enumerate(class_names):
        result[name] = [mean(precision[:, :, k, a, -1]) for a in (1, 2, 3)]
    return result


def match_same_class(
    gt_boxes: np.ndarray, gt_classes: np.ndarray, det_boxes: np.ndarray, det_classes: np.ndarray, iou_threshold: float
) -> np.ndarray:
    """[N] index of the ground-truth box each detection (in descending score order, boxes ``x, y, w, h``) matches
    in its own class, or -1."""
    matched = np.full(len(det_boxes), -1, dtype=np.int64)
    if not len(det_boxes) or not len(gt_boxes):
        return matched
    ious = _iou(det_boxes, gt_boxes)
    taken = np.zeros(len(gt_boxes), dtype=bool)
    for d in range(len(det_boxes)):
        candidates = np.where((gt_classes == det_classes[d]) & ~taken & (ious[d] >= iou_threshold), ious[d], -1.0)
        best = int(np.argmax(candidates))
        if candidates[best] >= 0:
            matched[d], taken[best] = best, True
    return matched


def confusion_counts(
    gt_boxes: np.ndarray,
    gt_classes: np.ndarray,
    det_boxes: np.ndarray,
    det_classes: np.ndarray,
    num_classes: int,
    iou_threshold: float,
) -> tuple[np.ndarray, int, int]:
    """(confusion [K + 1, K + 1], false positives, false negatives) of one image; detections in descending score
    order, boxes ``x, y, w, h``. A false positive is a detection without a box of its class, a false negative a box
    without a detection of its class (a class confusion is one of each)."""
    counts = np.zeros((num_classes + 1, num_classes + 1), dtype=np.int64)
    matched = match_same_class(gt_boxes, gt_classes, det_boxes, det_classes, iou_threshold)
    taken = np.zeros(len(gt_boxes), dtype=bool)
    taken[matched[matched >= 0]] = True
    false_positives = int((matched < 0).sum())
    false_negatives = int((~taken).sum())
    ious = _iou(det_boxes, gt_boxes) if len(det_boxes) and len(gt_boxes) else None
    for d in range(len(det_boxes)):
        if matched[d] >= 0:
            counts[gt_classes[matched[d]], det_classes[d]] += 1
            continue
        if ious is not None:
            candidates = np.where(~taken & (ious[d] >= iou_threshold), ious[d], -1.0)
            best = int(np.argmax(candidates))
            if candidates[best] >= 0:
                taken[best] = True
                counts[gt_classes[best], det_classes[d]] += 1
                continue
        counts[num_classes, det_classes[d]] += 1
    for g in np.flatnonzero(~taken):
        counts[gt_classes[g], num_classes] += 1
    return counts, false_positives, false_negatives


def threshold_curve(images: Sequence[tuple], iou_threshold: float, thresholds: np.ndarray) -> ThresholdCurve:
    """Precision / recall / F1 against the score threshold, from one greedy same-class matching of all detections
    (matching in score order makes the matches of the detections above any threshold the same as matching only
    those). ``images``: ``(image_id, gt_boxes, gt_classes, det_boxes, det_classes, scores)`` sorted by score."""
    scores, hits, num_gt = [], [], 0
    for _, gt_boxes, gt_classes, det_boxes, det_classes, det_scores in images:
        num_gt += len(gt_boxes)
        scores.append(det_scores)
        hits.append(match_same_class(gt_boxes, gt_classes, det_boxes, det_classes, iou_threshold) >= 0)
    all_scores = np.concatenate(scores) if scores else np.zeros(0)
    all_hits = np.concatenate(hits) if hits else np.zeros(0, dtype=bool)
    kept = all_scores[None, :] >= thresholds[:, None]  # [T, N]
    detections = kept.sum(axis=1)
    true_positives = (kept & all_hits[None, :]).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(detections > 0, true_positives / np.maximum(detections, 1), np.nan)
        recall = true_positives / num_gt if num_gt else np.zeros(len(thresholds))
        known = np.nan_to_num(precision)
        total = known + recall
        f1 = np.where(total > 0, 2 * known * recall / np.where(total > 0, total, 1), 0.0)
    return ThresholdCurve(thresholds, precision, recall.astype(np.float64), f1)


def _iou(det_boxes: np.ndarray, gt_boxes: np.ndarray) -> np.ndarray:
    """[N, G] IoU of ``x, y, w, h`` boxes, computed by pycocotools as COCOeval does."""
    ious = mask_utils.iou(
        np.ascontiguousarray(det_boxes, np.float64), np.ascontiguousarray(gt_boxes, np.float64), [0] * len(gt_boxes)
    )
    return np.asarray(ious, dtype=np.float64).reshape(len(det_boxes), len(gt_boxes))
