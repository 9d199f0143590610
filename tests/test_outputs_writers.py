"""KITTI labels, COCO results JSON, the classmap and the metrics JSON."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO

from rtdetr_tao.errors import DataError
from rtdetr_tao.eval.coco import CocoMetrics
from rtdetr_tao.eval.detections import ImageDetections, coco_results
from rtdetr_tao.outputs.classmap import read_classmap
from rtdetr_tao.outputs.coco_json import write_coco_results
from rtdetr_tao.outputs.kitti import format_kitti, write_kitti
from rtdetr_tao.outputs.metrics import write_metrics

DETECTIONS = ImageDetections(7, [[10, 20.5, 30.25, 40], [1.0004, 2, 3, 4]], [0.87654, 0.5], [1, 0])


def test_kitti_lines_have_tao_format(tmp_path: Path) -> None:
    path = tmp_path / "labels" / "img_001.txt"
    write_kitti(path, DETECTIONS, ["car", "traffic light"])
    assert path.read_text() == (
        "traffic_light 0.00 0 0.00 10.000 20.500 30.250 40.000 0.00 0.00 0.00 0.00 0.00 0.00 0.00 0.877\n"
        "car 0.00 0 0.00 1.000 2.000 3.000 4.000 0.00 0.00 0.00 0.00 0.00 0.00 0.00 0.500\n"
    )
    assert all(len(line.split()) == 16 for line in path.read_text().splitlines())


def test_kitti_empty_image_gets_an_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.txt"
    write_kitti(path, ImageDetections.empty(3), ["car"])
    assert path.exists() and path.read_text() == ""


def test_kitti_label_without_a_name() -> None:
    with pytest.raises(DataError, match="label 1 has no class name"):
        format_kitti(DETECTIONS, ["car"])


def test_coco_results_use_original_ids_and_xywh(tmp_path: Path) -> None:
    results = coco_results([DETECTIONS, ImageDetections.empty(8)], [3, 90])
    assert [(r["image_id"], r["category_id"]) for r in results] == [(7, 90), (7, 3)]
    assert results[0]["bbox"] == pytest.approx([10, 20.5, 20.25, 19.5])
    assert results[0]["score"] == pytest.approx(0.87654)

    path = tmp_path / "results.json"
    assert write_coco_results(path, [DETECTIONS], [3, 90]) == 2
    assert json.loads(path.read_text()) == results
    gt = COCO()
    gt.dataset = {"images": [{"id": 7}], "categories": [{"id": 3}, {"id": 90}], "annotations": []}
    gt.createIndex()
    loaded = gt.loadRes(str(path))  # pycocotools accepts the file as a results file
    assert sorted(a["category_id"] for a in loaded.anns.values()) == [3, 90]
    with pytest.raises(ValueError, match="label_to_category"):
        coco_results([DETECTIONS], [3])


def test_classmap_line_one_is_label_zero(tmp_path: Path) -> None:
    path = tmp_path / "classmap.txt"
    path.write_text("\ufeffperson\r\n car \r\ntraffic light\n\n  \n")
    names = read_classmap(path, num_classes=3)
    assert names == ["person", "car", "traffic light"]
    assert names[0] == "person"  # TAO's TensorRT path read this as label 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("person\n\ncar\n", "line 2: empty class name"),
        ("person\ncar\nperson\n", "line 3: 'person' repeats line 1"),
        ("\n\n", "is empty"),
        ("a\nb\n", "lists 2 names but the model predicts 3"),
    ],
)
def test_classmap_errors_name_the_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "classmap.txt"
    path.write_text(text)
    with pytest.raises(DataError, match=message) as info:
        read_classmap(path, num_classes=3)
    assert str(path) in str(info.value)


def test_classmap_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist.*classmap"):
        read_classmap(tmp_path / "nope.txt")


def test_metrics_json(tmp_path: Path) -> None:
    values = dict.fromkeys(["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm"], 0.5)
    metrics = CocoMetrics(**values, ARl=-1.0, per_class={"car": 0.5}, num_images=3, num_detections=9)
    path = tmp_path / "evaluate" / "results.json"
    write_metrics(path, metrics, {"checkpoint": Path("m.pth"), "conf_threshold": np.float32(0.25), "x": float("nan")})
    data = json.loads(path.read_text())
    assert data == {
        **values,
        "ARl": -1.0,
        "per_class": {"car": 0.5},
        "num_images": 3,
        "num_detections": 9,
        "checkpoint": "m.pth",
        "conf_threshold": 0.25,
        "x": None,
    }
    with pytest.raises(ValueError, match="AP"):
        write_metrics(path, metrics, {"AP": 1.0})
