"""The files of ``rtdetr inference`` and ``rtdetr-deploy inference``: ``images_annotated/<name>.jpg`` (boxes
drawn), ``labels/<name>.txt`` (KITTI) and ``results.json`` (COCO detection results with the original category
ids and each image's ``file_name``). Torch-free.

``<name>`` is the image's path relative to its ``image_dir`` without the extension (``s1/x`` for ``s1/x.jpg``),
so images of different folders never share an output file. When two images still map to one name (``x.jpg`` and
``x.png``, or the same relative path in two ``image_dir`` entries), the later one keeps its extension
(``x_png``), then gets a number (``x_2``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from PIL import Image

from ..data.video import split_media
from ..eval.detections import ImageDetections
from .coco_json import write_coco_results
from .draw import class_colors, draw_detections
from .kitti import write_kitti
from .video import Detect, run_videos


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


def write_inference(
    out_dir: Path, source: Any, cfg: Any, class_names: Sequence[str], label_to_category: Sequence[int], *,
    cache_dir: str | None, batch_size: int, write_images: Callable[[InferenceWriter, list[str]], int],
    video_detector: Callable[[], Detect],
) -> str:  # fmt: skip
    """The files of an inference job over ``source`` (the ``infer_data_sources`` section) with the ``inference``
    section ``cfg``: its image folders through ``write_images(writer, image_dirs)`` (→ the number of images), its
    video files and stream through :func:`~rtdetr_tao.outputs.video.run_videos` with ``video_detector()`` (built
    only when there are videos). Returns the job's final message."""
    image_dirs, videos = split_media(source.image_dir, cache_dir)
    images = frames = total = 0
    if image_dirs or not (videos or source.stream):
        writer = InferenceWriter(
            out_dir, class_names, conf_threshold=cfg.conf_threshold, color_map=cfg.color_map,
            outline_width=cfg.outline_width,
        )  # fmt: skip
        images = write_images(writer, image_dirs)
        total = writer.finish(label_to_category)
    if videos or source.stream:
        frames, found = run_videos(
            videos, source.stream, out_dir / "videos", video_detector(), class_names, label_to_category, cfg,
            batch_size,
        )  # fmt: skip
        total += found
    return f"Inference finished: {images} images, {frames} video frames, {total} detections."
