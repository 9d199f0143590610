"""The evaluation report: PNG plots (matplotlib, headless Agg), a gallery of the worst images and ``report.html``.

``write_report`` leaves in its folder::

    report.html               one page, no network: metrics, plots and gallery (the images sit beside it)
    report.json               the plotted numbers (confusion matrix, best-F1 threshold, AP by size, worst images)
    pr_curve_iou50.png        per-class precision–recall at IoU 0.50 (pycocotools' eval["precision"])
    pr_curve_iou50_95.png     the same, averaged over IoU 0.50:0.95
    ap_per_class.png          AP 0.50:0.95 and AP50 per class
    confusion_matrix.png      counts, background row and column, at the stated IoU and score threshold
    confusion_matrix_normalized.png   the same, each row divided by its sum
    score_threshold.png       precision, recall and F1 against the score threshold, best F1 marked
    ap_by_size.png            AP for small / medium / large objects
    curves.png                (train only) val_mAP and losses per epoch
    gallery/NN_<image>.jpg    the images with the most false positives + negatives: ground truth dashed,
                              predictions solid

Torch-free; matplotlib is imported when a plot is drawn.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import require
from ..eval.analysis import AREAS, Analysis, analyse
from ..eval.coco import SUMMARY_KEYS, CocoEvaluation, CocoMetrics
from ..io import atomic_open, atomic_write_text
from .draw import class_colors, draw_detections, draw_ground_truth
from .jsonable import jsonable

log = logging.getLogger(__name__)

PLOT_SIZE = (8.0, 6.0)  # inches; at PLOT_DPI a plot is 800 x 600 pixels (wider for many classes)
PLOT_DPI = 100
MAX_LEGEND = 20  # classes named in a PR legend; more make it unreadable
GALLERY_SIDE = 480  # longest side of a gallery image in pixels

PLOTS = {
    "pr_curve_iou50.png": "Precision–recall per class, IoU 0.50",
    "pr_curve_iou50_95.png": "Precision–recall per class, IoU 0.50:0.95",
    "ap_per_class.png": "AP per class",
    "confusion_matrix.png": "Confusion matrix (counts)",
    "confusion_matrix_normalized.png": "Confusion matrix (row-normalised)",
    "score_threshold.png": "Precision, recall and F1 against the score threshold",
    "ap_by_size.png": "AP by object size",
}


def plot_size(num_classes: int) -> tuple[int, int]:
    """(width, height) in pixels of the per-class plots for ``num_classes`` classes."""
    scale = max(1.0, num_classes / 20)
    return round(PLOT_SIZE[0] * scale * PLOT_DPI), round(PLOT_SIZE[1] * scale * PLOT_DPI)


def write_report(
    out_dir: str | Path,
    evaluation: CocoEvaluation,
    label_to_category: Sequence[int],
    *,
    image_path: Callable[[int], Path | None],
    title: str,
    context: Mapping[str, Any] | None = None,
    gallery_size: int = 8,
    curves: Path | None = None,
) -> Path:
    """Analyse ``evaluation`` (:func:`rtdetr_tao.eval.analysis.analyse`, IoU 0.50, the best-F1 score threshold)
    and write the report into ``out_dir`` (created); returns the path of ``report.html``.

    Args:
        evaluation: from :func:`rtdetr_tao.eval.coco.coco_evaluation`.
        label_to_category: category id of each contiguous detection label.
        image_path: the file of an image id (None: not available, left out of the gallery).
        title: the page's heading, e.g. ``Evaluation of model_best.pth``.
        context: extra rows for the settings table (model, thresholds, input size, ...).
        curves: an existing ``curves.png`` in ``out_dir`` to show (train's val_mAP / loss curves).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plt = _pyplot()
    analysis = analyse(evaluation, label_to_category)
    metrics, coco_gt = evaluation.metrics, evaluation.evaluator.cocoGt
    detections = {d.image_id: d for d in evaluation.detections}
    plots = [
        _plot_pr(plt, analysis, "iou50", out / "pr_curve_iou50.png"),
        _plot_pr(plt, analysis, "iou50_95", out / "pr_curve_iou50_95.png"),
        _plot_ap_per_class(plt, analysis, out / "ap_per_class.png"),
        _plot_confusion(plt, analysis, out / "confusion_matrix.png", normalized=False),
        _plot_confusion(plt, analysis, out / "confusion_matrix_normalized.png", normalized=True),
        _plot_threshold(plt, analysis, out / "score_threshold.png"),
        _plot_ap_by_size(plt, analysis, out / "ap_by_size.png"),
    ]
    gallery = _write_gallery(
        out / "gallery", analysis, coco_gt, label_to_category, image_path, detections, gallery_size
    )
    data = {"title": title, "metrics": metrics.to_dict(), **analysis.to_dict(), "context": dict(context or {})}
    atomic_write_text(out / "report.json", _json(data))
    page = _html(title, metrics, analysis, plots, gallery, dict(context or {}), curves)
    atomic_write_text(out / "report.html", page)
    log.info("evaluation report: %s", out / "report.html")
    return out / "report.html"


def plot_training_curves(status_file: str | Path, path: str | Path) -> Path | None:
    """``val_mAP`` / ``val_mAP50`` and the epoch losses per epoch, read from train's ``status.json`` RUNNING
    records (a resumed run included), as one PNG; None when no epoch was recorded."""
    import json

    epochs: dict[int, dict[str, Any]] = {}
    for line in Path(status_file).read_text(encoding="utf-8").splitlines():
        event = json.loads(line) if line.strip() else {}
        if event.get("status") == "RUNNING" and isinstance(event.get("epoch"), int):
            epochs[event["epoch"]] = event  # a resumed epoch's later record wins
    if not epochs:
        return None
    plt = _pyplot()
    xs = sorted(epochs)
    fig, (ax_map, ax_loss) = plt.subplots(1, 2, figsize=(12, 5), dpi=PLOT_DPI, layout="constrained")
    for key in ("val_mAP", "val_mAP50"):
        points = [(x, (epochs[x].get("kpi") or {}).get(key)) for x in xs]
        points = [(x, y) for x, y in points if isinstance(y, int | float)]
        if points:
            ax_map.plot(*zip(*points, strict=True), marker="o", label=key)
    ax_map.set(xlabel="epoch", ylabel="mAP", title="Validation mAP", ylim=(0, 1))
    loss_keys = sorted({k for x in xs for k in (epochs[x].get("losses") or {})})
    main = [k for k in loss_keys if k == "loss"] or loss_keys[:1]
    for key in main + [k for k in ("val_loss",) if any(k in (epochs[x].get("kpi") or {}) for x in xs)]:
        source = "losses" if key in loss_keys else "kpi"
        points = [(x, (epochs[x].get(source) or {}).get(key)) for x in xs]
        points = [(x, y) for x, y in points if isinstance(y, int | float)]
        if points:
            ax_loss.plot(*zip(*points, strict=True), marker="o", label="train loss" if key == "loss" else key)
    ax_loss.set(xlabel="epoch", ylabel="loss", title="Loss")
    for ax in (ax_map, ax_loss):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    return _save(plt, fig, Path(path))


def _pyplot() -> Any:
    matplotlib = require("matplotlib", extra="report", purpose="The evaluation report's plots")
    matplotlib.use("Agg", force=True)  # headless; never opens a window
    import matplotlib.pyplot as plt

    return plt


def _save(plt: Any, fig: Any, path: Path) -> Path:
    with atomic_open(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=PLOT_DPI)
    plt.close(fig)
    return path


def _figure(plt: Any, num_classes: int) -> tuple[Any, Any]:
    width, height = plot_size(num_classes)
    return plt.subplots(figsize=(width / PLOT_DPI, height / PLOT_DPI), dpi=PLOT_DPI, layout="constrained")


def _plot_pr(plt: Any, analysis: Analysis, which: str, path: Path) -> Path:
    curves = getattr(analysis.pr, which)
    fig, ax = _figure(plt, 1)
    colors = class_colors(analysis.class_names)
    for k, name in enumerate(analysis.class_names):
        if np.isnan(curves[k]).all():
            continue
        ap = float(np.nanmean(curves[k]))
        label = f"{name} {ap:.3f}" if k < MAX_LEGEND else None
        ax.plot(analysis.pr.recall, curves[k], color=colors[name], linewidth=1.5, label=label)
    with np.errstate(invalid="ignore"):
        defined = curves[~np.isnan(curves).all(axis=1)]
    if len(defined):
        mean = np.nanmean(defined, axis=0)
        ax.plot(analysis.pr.recall, mean, color="black", linewidth=3, label=f"all classes {np.nanmean(mean):.3f}")
    iou = "0.50" if which == "iou50" else "0.50:0.95"
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title=f"Precision–recall, IoU {iou}")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower left", fontsize="small", title="class  AP")
    return _save(plt, fig, path)


def _plot_ap_per_class(plt: Any, analysis: Analysis, path: Path) -> Path:
    names = analysis.class_names
    ap = [float(np.nanmean(c)) if not np.isnan(c).all() else 0.0 for c in analysis.pr.iou50_95]
    ap50 = [float(np.nanmean(c)) if not np.isnan(c).all() else 0.0 for c in analysis.pr.iou50]
    fig, ax = _figure(plt, len(names))
    y = np.arange(len(names))
    ax.barh(y - 0.2, ap, height=0.4, label="AP 0.50:0.95", color="#4363d8")
    ax.barh(y + 0.2, ap50, height=0.4, label="AP 0.50", color="#f58231")
    for yi, value in zip(y, ap, strict=True):
        ax.text(value + 0.01, yi - 0.2, f"{value:.3f}", va="center", fontsize="small")
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set(xlim=(0, 1.1), xlabel="AP", title="AP per class")
    ax.legend(loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    return _save(plt, fig, path)


def _plot_confusion(plt: Any, analysis: Analysis, path: Path, *, normalized: bool) -> Path:
    values = analysis.confusion_normalized if normalized else analysis.confusion
    labels = [*analysis.class_names, "background"]
    fig, ax = _figure(plt, len(labels))
    image = ax.imshow(values, cmap="Blues", vmin=0, vmax=1 if normalized else max(1, int(values.max())))
    fig.colorbar(image, ax=ax, shrink=0.8)
    if len(labels) <= 30:
        peak = 1 if normalized else max(1, values.max())
        for (row, col), value in np.ndenumerate(values):
            text = f"{value:.2f}" if normalized else str(int(value))
            color = "white" if value > 0.6 * peak else "black"
            ax.text(col, row, text, ha="center", va="center", color=color, fontsize="small")
    ticks = np.arange(len(labels))
    ax.set_xticks(ticks, labels, rotation=45, ha="right")
    ax.set_yticks(ticks, labels)
    kind = "row-normalised" if normalized else "counts"
    ax.set(
        xlabel="predicted class",
        ylabel="true class",
        title=f"Confusion matrix ({kind}), IoU {analysis.iou_threshold:.2f}, score ≥ {analysis.score_threshold:.2f}",
    )
    return _save(plt, fig, path)


def _plot_threshold(plt: Any, analysis: Analysis, path: Path) -> Path:
    curve = analysis.curve
    fig, ax = _figure(plt, 1)
    ax.plot(curve.thresholds, curve.precision, label="precision", color="#4363d8")
    ax.plot(curve.thresholds, curve.recall, label="recall", color="#3cb44b")
    ax.plot(curve.thresholds, curve.f1, label="F1", color="#e6194b", linewidth=2.5)
    threshold, f1 = curve.best
    ax.axvline(threshold, color="gray", linestyle="--")
    ax.plot([threshold], [f1], marker="o", color="#e6194b", markersize=9)
    ax.annotate(f"best F1 {f1:.3f} at {threshold:.2f}", (threshold, f1), xytext=(8, 8), textcoords="offset points")
    ax.set(
        xlabel="score threshold",
        ylabel="value",
        xlim=(0, 1),
        ylim=(0, 1.02),
        title=f"Precision / recall / F1, IoU {analysis.iou_threshold:.2f}, all classes",
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    return _save(plt, fig, path)


def _plot_ap_by_size(plt: Any, analysis: Analysis, path: Path) -> Path:
    fig, ax = _figure(plt, 1)
    x = np.arange(len(AREAS))
    values = [max(v, 0.0) for v in analysis.ap_by_size["all"]]
    bars = ax.bar(x, values, color=["#42d4f4", "#4363d8", "#000075"])
    for bar, value in zip(bars, analysis.ap_by_size["all"], strict=True):
        label = "n/a" if value < 0 else f"{value:.3f}"
        ax.text(bar.get_x() + bar.get_width() / 2, max(value, 0) + 0.01, label, ha="center")
    ax.set_xticks(x, ["small (< 32²)", "medium (32²–96²)", "large (> 96²)"])
    ax.set(ylim=(0, 1.05), ylabel="AP 0.50:0.95", title="AP by object size (all classes; n/a: no objects)")
    ax.grid(axis="y", alpha=0.3)
    return _save(plt, fig, path)


def _write_gallery(
    folder: Path,
    analysis: Analysis,
    coco_gt: Any,
    label_to_category: Sequence[int],
    image_path: Callable[[int], Path | None],
    detections: Mapping[int, Any],
    count: int,
) -> list[dict[str, Any]]:
    """Draw the worst images; returns one entry (file, image, false positives / negatives) per drawn image."""
    folder.mkdir(parents=True, exist_ok=True)
    names_by_category = {c: n for c, n in zip(analysis.category_ids, analysis.class_names, strict=True)}
    colors = class_colors(analysis.class_names)
    entries = []
    for rank, errors in enumerate(analysis.worst_images(count)):
        path = image_path(errors.image_id)
        if path is None or not Path(path).is_file():
            continue
        try:
            with Image.open(path) as opened:
                image = opened.convert("RGB")
            scale = GALLERY_SIDE / max(image.size)  # small images grow, large ones shrink: tags stay readable
            image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))))
        except OSError as exc:
            log.warning("report gallery: cannot read %s (%s); left out", path, exc)
            continue
        anns = [
            a
            for a in coco_gt.imgToAnns.get(errors.image_id, [])
            if not a.get("iscrowd", 0) and a["category_id"] in names_by_category
        ]
        gt_boxes = scale * np.asarray([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)]).reshape(-1, 4)
        drawn = draw_ground_truth(
            image, gt_boxes, [names_by_category[a["category_id"]] for a in anns], color_map=colors
        )
        found = detections.get(errors.image_id)
        if found is not None:
            found = found.filter(analysis.score_threshold)
            categories = [int(label_to_category[int(label)]) for label in found.labels]
            keep = [i for i, c in enumerate(categories) if c in names_by_category]
            drawn = draw_detections(
                drawn,
                scale * found.boxes[keep],
                found.scores[keep],
                [names_by_category[categories[i]] for i in keep],
                color_map=colors,
                outline_width=2,
            )
        name = f"{rank:02d}_{Path(path).stem}.jpg"
        with atomic_open(folder / name, "wb") as handle:
            drawn.save(handle, format="JPEG", quality=90)
        entries.append({"file": f"gallery/{name}", "image": Path(path).name, **errors.__dict__})
    return entries


def _json(data: Any) -> str:
    import json

    return json.dumps(jsonable(data), indent=2, allow_nan=False) + "\n"


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1400px; }
h1 { font-size: 1.6em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.5em 0; } td, th { border: 1px solid #ccc; padding: 0.25em 0.6em; }
th { background: #f0f0f0; text-align: left; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.plots { display: flex; flex-wrap: wrap; gap: 1em; } .plots figure { margin: 0; }
.plots img { max-width: 640px; width: 100%; border: 1px solid #ddd; }
.gallery { display: flex; flex-wrap: wrap; gap: 1em; } .gallery figure { margin: 0; }
.gallery img { max-width: 420px; border: 1px solid #ddd; } figcaption { font-size: 0.9em; color: #555; }
"""


def _html(
    title: str,
    metrics: CocoMetrics,
    analysis: Analysis,
    plots: list[Path],
    gallery: list[dict[str, Any]],
    context: dict[str, Any],
    curves: Path | None,
) -> str:
    esc = html.escape

    def cell(value: float) -> str:
        return "n/a" if value < 0 else f"{value:.4f}"

    keys = [*SUMMARY_KEYS, "images", "detections"]
    values = [cell(getattr(metrics, key)) for key in SUMMARY_KEYS] + [metrics.num_images, metrics.num_detections]
    summary = "<tr>" + "".join(f"<th>{key}</th>" for key in keys) + "</tr>"
    summary += "<tr>" + "".join(f"<td class='num'>{value}</td>" for value in values) + "</tr>"
    gt_per_class = analysis.confusion.sum(axis=1)[:-1]
    rows = []
    for k, name in enumerate(analysis.class_names):
        ap50 = analysis.pr.iou50[k]
        ap50_value = float(np.nanmean(ap50)) if not np.isnan(ap50).all() else -1.0
        sizes = "".join(f"<td class='num'>{cell(v)}</td>" for v in analysis.ap_by_size[name])
        rows.append(
            f"<tr><td class='class'>{esc(name)}</td><td class='num'>{cell(metrics.per_class.get(name, -1.0))}</td>"
            f"<td class='num'>{cell(ap50_value)}</td>{sizes}<td class='num'>{int(gt_per_class[k])}</td></tr>"
        )
    threshold, f1 = analysis.curve.best
    settings = {
        **context,
        "confusion matrix / gallery": f"IoU {analysis.iou_threshold:.2f}, score ≥ {analysis.score_threshold:.2f}",
        "best F1": f"{f1:.4f} at score threshold {threshold:.2f}",
    }
    settings_rows = "".join(f"<tr><th>{esc(str(k))}</th><td>{esc(str(v))}</td></tr>" for k, v in settings.items())
    figures = [(p.name, PLOTS[p.name]) for p in plots]
    if curves is not None:
        figures.insert(0, (curves.name, "Validation mAP and loss per epoch"))
    plot_html = "".join(
        f"<figure><img src='{esc(name)}' alt='{esc(caption)}'><figcaption>{esc(caption)}</figcaption></figure>"
        for name, caption in figures
    )
    if gallery:
        gallery_html = "".join(
            f"<figure><img src='{esc(e['file'])}' alt='{esc(e['image'])}'><figcaption>{esc(e['image'])}: "
            f"{e['false_positives']} false positive(s), {e['false_negatives']} false negative(s)</figcaption></figure>"
            for e in gallery
        )
    else:
        gallery_html = "<p>No image has errors at these thresholds.</p>"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{esc(title)}</title>
<style>{STYLE}</style>
</head>
<body>
<h1>{esc(title)}</h1>
<h2 id="metrics">COCO metrics</h2>
<table class="summary">{summary}</table>
<h2 id="settings">Settings</h2>
<table class="settings">{settings_rows}</table>
<h2 id="classes">Per class</h2>
<table class="classes">
<tr><th>class</th><th>AP</th><th>AP50</th><th>AP small</th><th>AP medium</th><th>AP large</th>
<th>ground-truth boxes</th></tr>
{"".join(rows)}
</table>
<h2 id="plots">Plots</h2>
<div class="plots">{plot_html}</div>
<h2 id="gallery">Images with the most errors</h2>
<p>Ground truth: dashed boxes with a white <q>GT class</q> tag; predictions (score ≥ {analysis.score_threshold:.2f}):
solid boxes with a filled <q>class score</q> tag.</p>
<div class="gallery">{gallery_html}</div>
</body>
</html>
"""
