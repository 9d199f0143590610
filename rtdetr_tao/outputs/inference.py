"""The files of ``rtdetr inference`` and ``rtdetr-deploy inference``: ``images_annotated/<name>.jpg`` (boxes
drawn), ``labels/<name>.txt`` (KITTI) and ``results.json`` (COCO detection results with the original category
ids and each image's ``file_name``). Torch-free.

``<name>`` is the image's path relative to its ``image_dir`` without the extension (``s1/x`` for ``s1/x.jpg``),
so images of different folders never share an output file. When two images still map to one name (``x.jpg`` and
``x.png``, or the same relative path in two ``image_dir`` entries), the later one keeps its extension
(``x_png``), then gets a number (``x_2``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath

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
        self.file_names: dict[int, str] = {}
        self.used: set[str] = set()

    def write(
        self, path: Path, image: Image.Image, detections: ImageDetections, name: str | None = None
    ) -> ImageDetections:
        """Keep the detections above the threshold, draw them on ``image`` and write the label file. ``name``: the
        image's path relative to its folder (POSIX), default its file name."""
        name = name or path.name
        found = detections.filter(self.conf_threshold)
        self.kept.append(found)
        self.file_names[found.image_id] = name
        stem = self._output_stem(name)
        (self.annotated / stem).parent.mkdir(parents=True, exist_ok=True)
        (self.labels / stem).parent.mkdir(parents=True, exist_ok=True)
        names = [self.names[int(label)] for label in found.labels]
        drawn = draw_detections(
            image, found.boxes, found.scores, names, color_map=self.colors, outline_width=self.outline_width
        )
        drawn.save(self.annotated / f"{stem}.jpg", quality=95)
        write_kitti(self.labels / f"{stem}.txt", found, self.names)
        return found

    def _output_stem(self, name: str) -> str:
        """A stem (``a/b``) no earlier image of this run has: see the module doc."""
        relative = PurePosixPath(name)
        base = relative.with_suffix("").as_posix()
        candidates = [base, f"{base}_{relative.suffix.lstrip('.')}"] if relative.suffix else [base]
        candidates += [f"{base}_{n}" for n in range(2, len(self.used) + 3)]
        stem = next(c for c in candidates if c not in self.used)
        self.used.add(stem)
        return stem

    def finish(self, label_to_category: Sequence[int]) -> int:
        """Write ``results.json``; returns the number of detections written."""
        return write_coco_results(
            self.out_dir / "results.json", self.kept, label_to_category, file_names=self.file_names
        )
