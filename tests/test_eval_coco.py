"""COCO evaluation against an independent pycocotools run on a hand-written results file."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from rtdetr_tao.errors import DataError, SpecError
from rtdetr_tao.eval.coco import SUMMARY_KEYS, CocoMetrics, coco_from_file, evaluate_coco
from rtdetr_tao.eval.detections import ImageDetections, merge_detections

# Non-contiguous, one-based category ids; label i is LABEL_TO_CATEGORY[i].
CATEGORIES = [{"id": 2, "name": "person"}, {"id": 5, "name": "traffic light"}, {"id": 9, "name": "dog"}]
LABEL_TO_CATEGORY = [2, 5, 9]
# Ground truth per image id: (category id, [x, y, w, h]); small (< 32²), medium and large boxes.
GROUND_TRUTH = {
    10: [(2, [10, 20, 20, 24]), (5, [100, 100, 50, 60]), (9, [200, 150, 150, 120])],
    11: [(2, [300, 40, 40, 90]), (9, [20, 200, 200, 160]), (5, [500, 400, 16, 30])],
    12: [(2, [50, 50, 60, 100]), (2, [400, 50, 60, 100]), (5, [600, 10, 20, 12])],
    13: [(9, [100, 100, 300, 250])],
    14: [(5, [30, 30, 40, 40])],
}
# Predictions per image id: (category id, [x, y, w, h], score); every number exact in float32.
PREDICTIONS = {
    10: [(2, [10, 20, 20, 24], 0.9), (5, [100, 100, 50, 60], 0.8), (9, [200, 150, 150, 120], 0.7)],  # perfect
    11: [(2, [302.5, 43, 40, 88], 0.45), (9, [26, 196, 200, 170], 0.4), (5, [504, 404, 16, 30], 0.3)],  # jittered
    12: [(2, [50, 50, 60, 100], 0.95), (5, [600, 10, 20, 12], 0.5)],  # one person missed
    13: [(9, [100, 100, 300, 250], 0.85), (2, [0, 0, 50, 50], 0.75), (9, [400, 300, 80, 80], 0.2)],  # false positives
    # 14: no detections
}


@pytest.fixture(scope="module")
def gt_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    images = [{"id": i, "file_name": f"{i}.jpg", "width": 640, "height": 480} for i in GROUND_TRUTH]
    annotations = [
        {"id": n, "image_id": i, "category_id": c, "bbox": box, "area": box[2] * box[3], "iscrowd": 0}
        for n, (i, c, box) in enumerate(((i, c, b) for i, anns in GROUND_TRUTH.items() for c, b in anns), start=1)
    ]
    path = tmp_path_factory.mktemp("coco") / "gt.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": CATEGORIES}))
    return path


@pytest.fixture(scope="module")
def coco_gt(gt_file: Path) -> COCO:
    return coco_from_file(gt_file)


def _records(predictions: dict[int, list]) -> list[ImageDetections]:
    records = []
    for image_id, preds in predictions.items():
        boxes = [[x, y, x + w, y + h] for _, (x, y, w, h), _ in preds]
        labels = [LABEL_TO_CATEGORY.index(c) for c, _, _ in preds]
        records.append(ImageDetections(image_id, boxes, [s for _, _, s in preds], labels))
    return records


def _reference(gt_file: Path, predictions: dict[int, list], tmp_path: Path, cat_ids: list[int] | None = None):
    """Run pycocotools by hand on a results file written without our code: (stats, AP per category id)."""
    results = [
        {"image_id": i, "category_id": c, "bbox": box, "score": s}
        for i, preds in predictions.items()
        for c, box, s in preds
    ]
    results_file = tmp_path / "results.json"
    results_file.write_text(json.dumps(results))
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_file))
        evaluator = COCOeval(gt, gt.loadRes(str(results_file)), "bbox")
        if cat_ids is not None:
            evaluator.params.catIds = cat_ids
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    per_class = {}
    for k, cat_id in enumerate(evaluator.params.catIds):
        precision = evaluator.eval["precision"][:, :, k, 0, -1]
        per_class[cat_id] = float(precision[precision > -1].mean()) if (precision > -1).any() else -1.0
    return [float(v) for v in evaluator.stats], per_class


def _summary(metrics: CocoMetrics) -> list[float]:
    return [getattr(metrics, key) for key in SUMMARY_KEYS]


def test_matches_pycocotools_on_a_hand_written_results_file(coco_gt: COCO, gt_file: Path, tmp_path: Path) -> None:
    metrics = evaluate_coco(coco_gt, _records(PREDICTIONS), LABEL_TO_CATEGORY)
    stats, per_class = _reference(gt_file, PREDICTIONS, tmp_path)
    assert _summary(metrics) == pytest.approx(stats, abs=1e-12)
    assert 0 < metrics.AP < 1 and metrics.APs >= 0 and metrics.APm >= 0 and metrics.APl >= 0
    names = {c["id"]: c["name"] for c in CATEGORIES}
    assert metrics.per_class == pytest.approx({names[i]: ap for i, ap in per_class.items()}, abs=1e-12)
    assert metrics.num_images == 5
    assert metrics.num_detections == sum(len(p) for p in PREDICTIONS.values())


def test_perfect_predictions_give_ap_one(coco_gt: COCO) -> None:
    perfect = {i: [(c, box, 0.9) for c, box in anns] for i, anns in GROUND_TRUTH.items()}
    metrics = evaluate_coco(coco_gt, _records(perfect), LABEL_TO_CATEGORY)
    expected = dict.fromkeys(SUMMARY_KEYS, 1.0) | {"AR1": 11 / 12}  # image 12: two persons, one detection each
    assert _summary(metrics) == pytest.approx(list(expected.values()))
    assert metrics.per_class == pytest.approx({"person": 1.0, "traffic light": 1.0, "dog": 1.0})


def test_eval_class_ids_restrict_the_evaluation(coco_gt: COCO, gt_file: Path, tmp_path: Path) -> None:
    metrics = evaluate_coco(coco_gt, _records(PREDICTIONS), LABEL_TO_CATEGORY, eval_class_ids=[5])
    stats, _ = _reference(gt_file, PREDICTIONS, tmp_path, cat_ids=[5])
    assert _summary(metrics) == pytest.approx(stats, abs=1e-12)
    assert list(metrics.per_class) == ["traffic light"]
    assert not np.isclose(metrics.AP, evaluate_coco(coco_gt, _records(PREDICTIONS), LABEL_TO_CATEGORY).AP)
    with pytest.raises(SpecError, match=r"eval_class_ids.*\[7\]"):
        evaluate_coco(coco_gt, [], LABEL_TO_CATEGORY, eval_class_ids=[5, 7])


def test_no_detections_give_zeros_without_crashing(coco_gt: COCO) -> None:
    for detections in ([], [ImageDetections.empty(i) for i in GROUND_TRUTH]):
        metrics = evaluate_coco(coco_gt, detections, LABEL_TO_CATEGORY)
        assert _summary(metrics) == [0.0] * 12
        assert metrics.per_class == {"person": 0.0, "traffic light": 0.0, "dog": 0.0}
        assert metrics.num_detections == 0


def test_conf_threshold_keeps_detections_on_their_own_images(coco_gt: COCO, gt_file: Path, tmp_path: Path) -> None:
    # A threshold of 0.5 empties image 11 (all scores below) and drops parts of 12 and 13; 14 had none.
    kept = [record.filter(0.5) for record in _records(PREDICTIONS)]
    assert [len(r) for r in kept] == [3, 0, 2, 2] and kept[1].image_id == 11
    surviving = {i: [p for p in preds if p[2] >= 0.5] for i, preds in PREDICTIONS.items()}
    stats, _ = _reference(gt_file, surviving, tmp_path)
    assert _summary(evaluate_coco(coco_gt, kept, LABEL_TO_CATEGORY)) == pytest.approx(stats, abs=1e-12)
    # Dropping the emptied images (TAO's fault) must not change anything either: ids travel with detections.
    non_empty = [r for r in kept if len(r)]
    assert _summary(evaluate_coco(coco_gt, non_empty, LABEL_TO_CATEGORY)) == pytest.approx(stats, abs=1e-12)


def test_image_ids_restrict_the_evaluation(coco_gt: COCO) -> None:
    metrics = evaluate_coco(coco_gt, _records(PREDICTIONS), LABEL_TO_CATEGORY, image_ids=[10, 12])
    assert metrics.num_images == 2 and metrics.num_detections == 5
    assert metrics.AP50 < 1 and metrics.APl == pytest.approx(1.0)
    with pytest.raises(ValueError, match="99"):
        evaluate_coco(coco_gt, [ImageDetections.empty(99)], LABEL_TO_CATEGORY)


def test_rank_merge_dedupes_and_evaluation_rejects_duplicates(coco_gt: COCO) -> None:
    records = _records(PREDICTIONS)
    rank0, rank1 = records[::2], [*records[1::2], records[0]]  # a padded sampler repeats image 10
    merged = merge_detections([rank1, rank0])
    assert [r.image_id for r in merged] == [10, 11, 12, 13]
    assert _summary(evaluate_coco(coco_gt, merged, LABEL_TO_CATEGORY)) == _summary(
        evaluate_coco(coco_gt, records, LABEL_TO_CATEGORY)
    )
    with pytest.raises(ValueError, match="more than one"):
        evaluate_coco(coco_gt, [*rank0, *rank1], LABEL_TO_CATEGORY)


def test_category_names_to_dict_and_table(coco_gt: COCO, capsys: pytest.CaptureFixture[str]) -> None:
    metrics = evaluate_coco(
        coco_gt, _records(PREDICTIONS), LABEL_TO_CATEGORY, category_names={2: "pedestrian", 5: "light", 9: "dog"}
    )
    assert capsys.readouterr().out == ""  # pycocotools' prints are silenced
    assert list(metrics.per_class) == ["pedestrian", "light", "dog"]
    data = json.loads(json.dumps(metrics.to_dict(), allow_nan=False))
    assert set(data) == {*SUMMARY_KEYS, "per_class", "num_images", "num_detections"}
    assert metrics.kpi("val") == {"val_mAP": metrics.AP, "val_mAP50": metrics.AP50}
    table = metrics.table()
    assert "AP50" in table and "pedestrian" in table and f"{metrics.AP:.4f}" in table

    only_small = evaluate_coco(coco_gt, [], LABEL_TO_CATEGORY, image_ids=[14])  # one 40 x 40 box: medium only
    assert only_small.APs == -1 and only_small.APl == -1 and only_small.APm == 0
    assert "n/a" in only_small.table()


def test_boxes_are_evaluated_in_xywh_with_original_category_ids(coco_gt: COCO) -> None:
    # Label 1 is category 5; a label-as-id or xyxy-as-xywh mix-up would miss this perfect box.
    detection = ImageDetections(14, [[30, 30, 70, 70]], [0.9], [1])
    metrics = evaluate_coco(coco_gt, [detection], LABEL_TO_CATEGORY, image_ids=[14])
    assert np.isclose(metrics.AP, 1.0)


def test_coco_from_file_fills_defaults_and_reports_bad_files(tmp_path: Path) -> None:
    path = tmp_path / "gt.json"
    path.write_text(
        json.dumps(
            {
                "images": [{"id": 1, "width": 10, "height": 10}],
                "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 2, 3]}],
                "categories": [{"id": 1, "name": "a"}],
            }
        )
    )
    ann = coco_from_file(path).anns[1]
    assert ann["area"] == 6 and ann["iscrowd"] == 0

    def with_annotation(**ann: object) -> str:
        return json.dumps({"images": [], "categories": [], "annotations": [{"id": 1, "image_id": 1, **ann}]})

    cases = {
        "missing.json": (None, "does not exist"),
        "corrupt.json": ('{"images": [', "not readable JSON"),
        "list.json": ("[]", "JSON object"),
        "no_categories.json": ('{"images": []}', "'categories'"),
        "no_bbox.json": (with_annotation(category_id=1), r"annotations\[0\] lacks bbox"),
        "bad_bbox.json": (with_annotation(category_id=1, bbox=[1]), r"annotations\[0\]\.bbox must be \[x, y, w, h\]"),
    }
    for name, (text, message) in cases.items():
        if text is not None:
            (tmp_path / name).write_text(text)
        with pytest.raises(DataError, match=message) as info:
            coco_from_file(tmp_path / name)
        assert name in str(info.value)


def test_image_detections_record() -> None:
    record = ImageDetections(np.int64(4), [[0, 0, 1, 1], [1, 1, 2, 2]], [0.2, 0.7], [3, 1])
    assert record.image_id == 4 and type(record.image_id) is int
    assert record.boxes.dtype == np.float32 and record.boxes.shape == (2, 4) and record.labels.dtype == np.int64
    kept = record.filter(0.5)
    assert kept.image_id == 4 and kept.labels.tolist() == [1]
    assert len(record.filter(0.0)) == 2 and len(record.filter(0.7)) == 1 and len(ImageDetections.empty(1)) == 0
    with pytest.raises(ValueError, match="differ in length"):
        ImageDetections(1, [[0, 0, 1, 1]], [0.5, 0.6], [0])
