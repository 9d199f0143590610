"""The evaluation report: hand-computed confusion matrix, PR curves and threshold curve on a fixture with known
detections; valid PNGs of the stated size; report.html lists every class and links only files that exist."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rtdetr_tao.eval.analysis import analyse
from rtdetr_tao.eval.coco import coco_evaluation, coco_from_file
from rtdetr_tao.eval.detections import ImageDetections

LABEL_TO_CATEGORY = [1, 3]  # label 0 → "a" (id 1), label 1 → "b" (id 3)
# Ground truth (x, y, w, h); every box is small (< 32²).
GROUND_TRUTH = {
    1: [(1, [0, 0, 10, 10]), (3, [20, 20, 10, 10])],  # A1, B1
    2: [(1, [0, 0, 20, 20])],  # A2
    3: [(3, [10, 10, 10, 10])],  # B3
}
# Detections (label, x1 y1 x2 y2, score):
#  d1: a on A1 with IoU 0.62 (a hit at IoU 0.50, 0.55, 0.60, a miss from 0.65 on)
#  d4: b on A2 with IoU 1 (a class confusion), d2: b on B1 (a hit), d3: a on nothing (background)
DETECTIONS = {
    1: [(0, [0, 0, 10, 6.2], 0.9), (1, [20, 20, 30, 30], 0.8), (0, [50, 50, 60, 60], 0.3)],
    2: [(1, [0, 0, 20, 20], 0.85)],
}
# B3 is never detected.


@pytest.fixture(scope="module")
def evaluation(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("report_fixture")
    images = [{"id": i, "file_name": f"img{i}.png", "width": 64, "height": 48} for i in GROUND_TRUTH]
    anns = [
        {"id": n, "image_id": i, "category_id": c, "bbox": box}
        for n, (i, c, box) in enumerate(((i, c, b) for i, a in GROUND_TRUTH.items() for c, b in a), start=1)
    ]
    categories = [{"id": 1, "name": "a"}, {"id": 3, "name": "b"}]
    (root / "gt.json").write_text(json.dumps({"images": images, "annotations": anns, "categories": categories}))
    for image in images:
        Image.new("RGB", (64, 48), (90, 120, 150)).save(root / image["file_name"])
    detections = [
        ImageDetections(i, [b for _, b, _ in d], [s for _, _, s in d], [label for label, _, _ in d])
        for i, d in DETECTIONS.items()
    ]
    coco_gt = coco_from_file(root / "gt.json")
    return root, coco_evaluation(coco_gt, detections, LABEL_TO_CATEGORY)


def test_pr_curves_are_pycocotools_precision_and_equal_hand_computed_values(evaluation) -> None:
    _, result = evaluation
    analysis = analyse(result, LABEL_TO_CATEGORY)
    recall = np.linspace(0, 1, 101)
    up_to_half = recall <= 0.5 + 1e-12
    # class a at IoU 0.50: d1 hit (recall 1/2, precision 1), then d3 miss → precision 1 up to recall 0.5, then 0
    np.testing.assert_allclose(analysis.pr.iou50[0], np.where(up_to_half, 1.0, 0.0))
    # class b: d4 miss first (precision 0), then d2 hit (recall 1/2, precision 1/2) → interpolated 0.5, then 0
    np.testing.assert_allclose(analysis.pr.iou50[1], np.where(up_to_half, 0.5, 0.0))
    # 0.50:0.95: class a hits at 3 of the 10 IoU thresholds; class b's hit has IoU 1 → all 10
    np.testing.assert_allclose(analysis.pr.iou50_95[0], np.where(up_to_half, 0.3, 0.0))
    np.testing.assert_allclose(analysis.pr.iou50_95[1], analysis.pr.iou50[1])
    # the same numbers as pycocotools' own array, and the per-class AP of the metrics
    np.testing.assert_array_equal(analysis.pr.iou50.T, result.evaluator.eval["precision"][0, :, :, 0, -1])
    assert result.metrics.per_class["a"] == pytest.approx(0.3 * 51 / 101)
    assert result.metrics.per_class["b"] == pytest.approx(0.5 * 51 / 101)
    assert analysis.ap_by_size["all"] == [pytest.approx(result.metrics.APs), -1.0, -1.0]


def test_threshold_curve_and_best_f1_equal_hand_computed_values(evaluation) -> None:
    _, result = evaluation
    curve = analyse(result, LABEL_TO_CATEGORY).curve
    # scores .9 hit, .85 miss, .8 hit, .3 miss; 4 ground-truth boxes
    expected = {0.0: (2 / 4, 2 / 4), 0.3: (2 / 4, 2 / 4), 0.5: (2 / 3, 2 / 4), 0.82: (1 / 2, 1 / 4), 0.88: (1, 1 / 4)}
    for threshold, (precision, recall) in expected.items():
        index = int(np.flatnonzero(np.isclose(curve.thresholds, threshold))[0])
        assert curve.precision[index] == pytest.approx(precision)
        assert curve.recall[index] == pytest.approx(recall)
        assert curve.f1[index] == pytest.approx(2 * precision * recall / (precision + recall))
    assert np.isnan(curve.precision[-1]) and curve.recall[-1] == 0 and curve.f1[-1] == 0  # nothing above 1.0
    assert curve.best == (pytest.approx(0.31), pytest.approx(4 / 7))  # first threshold above the .3 miss


def test_confusion_matrix_equals_hand_computed_counts(evaluation) -> None:
    _, result = evaluation
    # rows: true a, true b, background; columns: predicted a, predicted b, background
    at_half = analyse(result, LABEL_TO_CATEGORY, score_threshold=0.5)
    np.testing.assert_array_equal(at_half.confusion, [[1, 1, 0], [0, 1, 1], [0, 0, 0]])
    everything = analyse(result, LABEL_TO_CATEGORY, score_threshold=0.0)
    np.testing.assert_array_equal(everything.confusion, [[1, 1, 0], [0, 1, 1], [1, 0, 0]])
    np.testing.assert_allclose(everything.confusion_normalized, [[0.5, 0.5, 0], [0, 0.5, 0.5], [1, 0, 0]])
    # at IoU 0.65 d1 no longer matches A1: it is a false positive and A1 a miss
    strict = analyse(result, LABEL_TO_CATEGORY, score_threshold=0.5, iou_threshold=0.65)
    np.testing.assert_array_equal(strict.confusion, [[0, 1, 1], [0, 1, 1], [1, 0, 0]])
    default = analyse(result, LABEL_TO_CATEGORY)  # best-F1 threshold 0.31
    assert default.score_threshold == pytest.approx(0.31)
    np.testing.assert_array_equal(default.confusion, at_half.confusion)
    worst = default.worst_images(5)  # image 2: d4 (FP) + A2 (FN); image 3: B3 (FN)
    assert [(e.image_id, e.false_positives, e.false_negatives) for e in worst] == [(2, 1, 1), (3, 0, 1)]


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.links: list[str] = []
        self.classes: list[str] = []
        self._in_class = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "img":
            self.images.append(values["src"] or "")
        if tag in ("link", "script") or (tag == "a" and "href" in values):
            self.links.append(values.get("href") or values.get("src") or "")
        self._in_class = tag == "td" and values.get("class") == "class"

    def handle_data(self, data: str) -> None:
        if self._in_class:
            self.classes.append(data)
            self._in_class = False


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def _write(evaluation, out: Path) -> Path:
    from rtdetr_tao.outputs.report import write_report

    root, result = evaluation
    return write_report(
        out,
        result,
        LABEL_TO_CATEGORY,
        image_path=lambda image_id: root / f"img{image_id}.png",
        title="Evaluation of a fixture",
        context={"model": "fixture.pth"},
    )


def test_report_writes_plots_gallery_and_html_listing_every_class(evaluation, tmp_path: Path) -> None:
    from rtdetr_tao.outputs.report import PLOTS, plot_size

    page_path = _write(evaluation, tmp_path / "report")
    out = page_path.parent
    for name in PLOTS:
        assert _png_size(out / name) == plot_size(2), name
        with Image.open(out / name) as image:
            image.verify()
    page = _Page()
    page.feed(page_path.read_text(encoding="utf-8"))
    assert page.classes == ["a", "b"]
    assert not page.links  # self-contained: no stylesheet, script or link to fetch
    assert set(PLOTS) <= set(page.images)
    for src in page.images:
        assert "://" not in src and (out / src).is_file(), src
    gallery = sorted(p.name for p in (out / "gallery").iterdir())
    assert gallery == ["00_img2.jpg", "01_img3.jpg"]  # the images with errors, worst first
    with Image.open(out / "gallery" / "00_img2.jpg") as drawn:
        pixels = np.asarray(drawn.convert("RGB")).reshape(-1, 3)
    assert len(np.unique(pixels, axis=0)) > 2  # boxes and tags drawn on the flat background
    data = json.loads((out / "report.json").read_text())
    assert data["confusion_matrix"]["counts"] == [[1, 1, 0], [0, 1, 1], [0, 0, 0]]
    assert data["classes"] == ["a", "b"] and data["best_f1"]["threshold"] == pytest.approx(0.31)


def test_training_curves_come_from_status_json(tmp_path: Path) -> None:
    from rtdetr_tao.outputs.report import plot_training_curves
    from rtdetr_tao.outputs.status import StatusLogger

    status = StatusLogger(tmp_path / "status.json")
    status.log("STARTED", "no epoch yet")
    assert plot_training_curves(status.path, tmp_path / "none.png") is None
    for epoch in range(3):
        status.log("RUNNING", epoch=epoch, losses={"loss": 3.0 - epoch}, kpi={"val_mAP": 0.1 * epoch})
    path = plot_training_curves(status.path, tmp_path / "curves.png")
    assert path is not None and _png_size(path) == (1200, 500)


@pytest.mark.slow
def test_report_renders_in_headless_chromium(evaluation, tmp_path: Path) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("headless Chromium is not installed (Debian: apt-get install chromium)")
    page_path = _write(evaluation, tmp_path / "report")
    shot = tmp_path / "shot.png"
    subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1400,3000",
         f"--screenshot={shot}", page_path.as_uri()],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    dom = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", page_path.as_uri()],
        check=True, capture_output=True, text=True, timeout=120,
    ).stdout  # fmt: skip
    assert "confusion_matrix.png" in dom and '<td class="class">b</td>' in dom
    assert _png_size(shot) == (1400, 3000)
    with Image.open(shot) as image:
        colors = len(np.unique(np.asarray(image.convert("RGB")).reshape(-1, 3), axis=0))
    assert colors > 50  # the plots were decoded and painted, not a blank page


def test_missing_matplotlib_names_the_extra(evaluation, tmp_path, monkeypatch) -> None:
    import sys

    from rtdetr_tao.errors import DependencyError

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(DependencyError, match=r"pip install 'rtdetr-tao\[report\]'"):
        _write(evaluation, tmp_path / "report")
