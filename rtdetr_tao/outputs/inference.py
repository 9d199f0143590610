"""The files of ``rtdetr inference`` and ``rtdetr-deploy inference``: ``images_annotated/<name>.jpg`` (boxes
drawn), ``labels/<name>.txt`` (KITTI) and ``results.json`` (COCO detection results with the original category
ids). Torch-free."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from PIL import Image

from ..eval.detections import ImageDetections
from .coco_json import write_coco_results
from .draw import class_colors, draw_detections
from .kitti import write_kitti


class InferenceWriter:
    """Writes one image's detections at a time, then the COCO results of all of them."""

    def __init__(
        self,
        out_dir: str | Path,
        class_names: Sequence[str],
        *,
        conf_threshold: float,
        color_map: Mapping[str, str] | None = None,
        outline_width: int = 3,
    ) -> None:
        self.out_dir = Path(out_dir)
        self.annotated, self.labels = self.out_dir / "images_annotated", self.out_dir / "labels"
        self.annotated.mkdir(parents=True, exist_ok=True)
        self.labels.mkdir(parents=True, exist_ok=True)
        self.names, self.conf_threshold, self.outline_width = list(class_names), conf_threshold, outline_width
        self.colors = class_colors(self.names, color_map)
        self.kept: list[ImageDetections] = []

    def write(self, path: Path, image: Image.Image, detections: ImageDetections) -> ImageDetections:
        """Keep the detections above the threshold, draw them on ``image`` and write the label file."""
        found = detections.filter(self.conf_threshold)
        self.kept.append(found)
        names = [self.names[int(label)] for label in found.labels]
        drawn = draw_detections(
            image, found.boxes, found.scores, names, color_map=self.colors, outline_width=self.outline_width
        )
        drawn.save(self.annotated / f"{path.stem}.jpg", quality=95)
        write_kitti(self.labels / f"{path.stem}.txt", found, self.names)
        return found

    def finish(self, label_to_category: Sequence[int]) -> int:
        """Write ``results.json``; returns the number of detections written."""
        return write_coco_results(self.out_dir / "results.json", self.kept, label_to_category)
