"""A friendly Python API for detection with a trained model::

    from rtdetr_tao import Predictor

    predictor = Predictor.from_checkpoint("results/train/model_best.pth")  # or Predictor.from_onnx("model.onnx")
    for found in predictor.predict(["a.jpg", "b.jpg"], threshold=0.5):
        for name, score, box in found:
            print(name, round(score, 2), box)

Both backends share the preprocessing of :mod:`rtdetr_tao.data.preprocess` and return
:class:`Detections` in original-image pixels.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .data.preprocess import load_rgb, to_model_input, to_rgb
from .errors import require
from .eval.detections import ImageDetections
from .eval.postprocess import postprocess

ImageLike = str | Path | Image.Image | np.ndarray


@dataclass
class Detections:
    """Detections of one image: ``boxes`` [K, 4] xyxy pixels, ``scores`` [K], ``labels`` [K] (training labels),
    ``category_ids`` [K] (the dataset's ids) and ``names``; iterating gives ``(name, score, box)``."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    category_ids: np.ndarray
    names: list[str]

    def __len__(self) -> int:
        return len(self.scores)

    def __iter__(self) -> Iterator[tuple[str, float, list[float]]]:
        for name, score, box in zip(self.names, self.scores, self.boxes, strict=True):
            yield name, float(score), [float(v) for v in box]

    def draw(self, image: ImageLike, *, outline_width: int = 3) -> Image.Image:
        """A copy of ``image`` with these detections drawn (class name and score on each box)."""
        from .outputs.draw import class_colors, draw_detections

        colors = class_colors(sorted(set(self.names)))
        return draw_detections(_as_image(image), self.boxes, self.scores, self.names, color_map=colors,
                               outline_width=outline_width)  # fmt: skip

    def to_supervision(self) -> Any:
        """These detections as ``supervision.Detections``: ``xyxy``, ``confidence``, ``class_id`` (the dataset's
        category ids, as RF-DETR gives them) and ``data["class_name"]``."""
        sv = require("supervision", extra="supervision", purpose="Detections.to_supervision")
        return sv.Detections(
            xyxy=self.boxes.astype(np.float32).reshape(-1, 4),
            confidence=self.scores.astype(np.float32),
            class_id=self.category_ids.astype(np.int64),
            data={"class_name": np.asarray(self.names, dtype=str)},
        )


def _as_image(image: ImageLike) -> Image.Image:
    if isinstance(image, Image.Image):
        return to_rgb(image)
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"numpy images must be uint8 [H, W, 3] RGB, got {image.dtype} {image.shape}")
        return Image.fromarray(image, "RGB")
    return load_rgb(image)


class Predictor:
    """Runs a model on images; build it with :meth:`from_checkpoint` or :meth:`from_onnx`."""

    def __init__(
        self,
        run: Any,
        *,
        class_names: Sequence[str],
        label_to_category: Sequence[int],
        input_size: tuple[int, int],
        num_select: int,
        preserve_aspect_ratio: bool = False,
    ) -> None:
        self._run = run  # float32 [B, 3, H, W] → (logits [B, Q, C], boxes [B, Q, 4])
        self.class_names, self.label_to_category = list(class_names), list(label_to_category)
        self.input_size, self.num_select, self.preserve_aspect_ratio = input_size, num_select, preserve_aspect_ratio

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, *, device: str = "cpu", input_size: tuple[int, int] | None = None, spec: Any = None
    ) -> Predictor:
        """A PyTorch predictor from any weights file ``rtdetr`` loads (ours carry their classes; for official or
        Hugging Face weights pass an ``ExperimentSpec`` with the model and dataset). ``input_size`` (H, W): None
        runs the model at the size it was trained at (640 x 640 when the file does not record it)."""

        from .config import ExperimentSpec
        from .engine.restore import load_trained_model

        spec = spec or ExperimentSpec()
        trained = load_trained_model(str(path), spec, eval_spatial_size=input_size, size_key="input_size")
        return cls.from_trained(trained, device=device)

    @classmethod
    def from_trained(
        cls,
        trained: Any,
        *,
        device: Any = "cpu",
        input_size: tuple[int, int] | None = None,
        preserve_aspect_ratio: bool = False,
    ) -> Predictor:
        """A PyTorch predictor from a loaded ``TrainedModel`` (see ``engine.restore.load_trained_model``);
        ``input_size`` (H, W) None: the size it was loaded at."""
        import torch

        model = trained.fast_model().to(device)

        def run(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            with torch.inference_mode():
                out = model(torch.from_numpy(batch).to(device))
            return out["pred_logits"].float().cpu().numpy(), out["pred_boxes"].float().cpu().numpy()

        cmap = trained.category_map
        return cls(
            run, class_names=cmap.category_names, label_to_category=cmap.label_to_category,
            input_size=input_size or trained.input_size, num_select=trained.model_spec.num_select,
            preserve_aspect_ratio=preserve_aspect_ratio,
        )  # fmt: skip

    @classmethod
    def from_onnx(cls, path: str | Path) -> Predictor:
        """An ONNX Runtime predictor from ``rtdetr export`` output with ``export.raw_outputs: true``."""
        from .errors import DataError
        from .runtime.backends import OnnxRuntimeBackend

        backend = OnnxRuntimeBackend(path, providers=["CPUExecutionProvider"], purpose="Predictor.from_onnx")
        meta = backend.metadata
        if meta.outputs != "raw":
            raise DataError(f"{path} has post-processing inside; export it with export.raw_outputs=true for Predictor")

        def run(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            outputs = backend.run(batch, np.zeros((len(batch), 2), np.float32))  # a raw graph takes no sizes
            return outputs["pred_logits"], outputs["pred_boxes"]

        return cls(
            run, class_names=meta.class_names, label_to_category=meta.label_to_category,
            input_size=tuple(meta.input_size), num_select=meta.num_select,
            preserve_aspect_ratio=meta.preserve_aspect_ratio,
        )  # fmt: skip

    def predict_raw(self, images: Sequence[ImageLike]) -> list[ImageDetections]:
        """Top-``num_select`` detections per image (no threshold), in original pixels."""
        pil = [_as_image(image) for image in images]
        arrays, letterboxes = zip(
            *(to_model_input(image, self.input_size, self.preserve_aspect_ratio) for image in pil), strict=True
        )
        logits, boxes = self._run(np.stack(arrays))
        return postprocess(
            logits, boxes, [image.size for image in pil], list(range(len(pil))), num_select=self.num_select,
            letterboxes=list(letterboxes) if self.preserve_aspect_ratio else None,
        )  # fmt: skip

    def predict(self, images: ImageLike | Sequence[ImageLike], threshold: float = 0.5) -> list[Detections]:
        """Detections with score >= ``threshold`` for one image or a list (paths, PIL images or uint8 arrays)."""
        single = isinstance(images, str | Path | Image.Image | np.ndarray)
        return [self._detections(d, threshold) for d in self.predict_raw([images] if single else list(images))]

    def predict_video(
        self, source: str | Path, threshold: float = 0.5, *, batch_size: int = 1
    ) -> Iterator[tuple[int, Detections]]:
        """``(frame_index, Detections)`` for every frame of a video file or a stream URL (PyAV decodes it), e.g.
        ``for k, found in predictor.predict_video("clip.mp4"): tracker.update_with_detections(found.to_supervision())``.
        """
        from .data.video import VideoReader
        from .outputs.video import batches

        with VideoReader(source, live="://" in str(source)) as reader:
            for batch in batches(iter(reader), batch_size):
                found = self.predict_raw([frame.image for frame in batch])
                for frame, detections in zip(batch, found, strict=True):
                    yield frame.index, self._detections(detections, threshold)

    def _detections(self, detections: ImageDetections, threshold: float) -> Detections:
        kept = detections.filter(threshold)
        labels = np.asarray(kept.labels, dtype=np.int64)
        ids = np.asarray(self.label_to_category, dtype=np.int64)[labels]
        return Detections(kept.boxes, kept.scores, labels, ids, [self.class_names[i] for i in labels])
