"""Detections from an exported model (ONNX Runtime or TensorRT), without PyTorch: the preprocessing of
:mod:`rtdetr_tao.data.preprocess`, batches through :func:`rtdetr_tao.runtime.backends.run_batched`, and the same
post-processing as ``rtdetr`` (top-k in the graph, or :func:`rtdetr_tao.eval.postprocess.postprocess` for raw
outputs)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from ..data.preprocess import load_rgb, to_model_input
from ..errors import DataError
from ..eval.detections import ImageDetections
from ..eval.postprocess import Letterbox, postprocess
from .backends import Backend, run_batched

log = logging.getLogger(__name__)


def _box_scale(orig_size: tuple[int, int], letterbox: Letterbox | None) -> tuple[float, float]:
    """The (w, h) the graph multiplies normalised boxes by so that they land in original pixels: the original size
    when stretched; with a letterbox (offset 0), the canvas size times original / resized."""
    if letterbox is None:
        return float(orig_size[0]), float(orig_size[1])
    (in_w, in_h), (rw, rh) = letterbox.input_size, letterbox.resized_size
    return in_w * orig_size[0] / rw, in_h * orig_size[1] / rh


def detect_batch(
    backend: Backend, paths: Sequence[Path], image_ids: Sequence[int]
) -> list[tuple[ImageDetections, tuple[int, int]]]:
    """Run ``backend`` on the images at ``paths`` → (detections in original pixels, original (w, h)) per image."""
    images = [load_rgb(path) for path in paths]
    found = detect_images(backend, images, image_ids)
    return list(zip(found, [image.size for image in images], strict=True))


def detect_images(backend: Backend, images: Sequence[Image.Image], image_ids: Sequence[int]) -> list[ImageDetections]:
    """Run ``backend`` on RGB ``images`` → their detections in original pixels."""
    meta = backend.metadata
    arrays, sizes, scales, letterboxes = [], [], [], []
    for image in images:
        array, letterbox = to_model_input(image, tuple(meta.input_size), meta.preserve_aspect_ratio)
        arrays.append(array)
        sizes.append(image.size)
        scales.append(_box_scale(image.size, letterbox))
        letterboxes.append(letterbox)
    outputs = run_batched(backend, np.stack(arrays), np.asarray(scales, dtype=np.float32))
    if meta.outputs == "raw":
        found = postprocess(
            outputs["pred_logits"],
            outputs["pred_boxes"],
            sizes,
            list(image_ids),
            num_select=meta.num_select,
            letterboxes=letterboxes if meta.preserve_aspect_ratio else None,
        )
    else:
        found = [
            ImageDetections(image_id, outputs["boxes"][i], outputs["scores"][i], outputs["labels"][i])
            for i, image_id in enumerate(image_ids)
        ]
    return found


def detect(
    backend: Backend, items: Iterable[tuple[int, Path]], batch_size: int, *, skip_unreadable: bool = False
) -> Iterator[tuple[Path, ImageDetections, tuple[int, int]]]:
    """(image id, path) pairs → (path, detections, original (w, h)), ``batch_size`` images per call.
    ``skip_unreadable``: log and skip images that cannot be read (else they raise a DataError naming them)."""
    chunk: list[tuple[int, Path]] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == batch_size:
            yield from _run(backend, chunk, skip_unreadable)
            chunk = []
    if chunk:
        yield from _run(backend, chunk, skip_unreadable)


def _run(
    backend: Backend, chunk: list[tuple[int, Path]], skip_unreadable: bool
) -> Iterator[tuple[Path, ImageDetections, tuple[int, int]]]:
    readable = []
    for image_id, path in chunk:
        if not skip_unreadable:
            readable.append((image_id, path))
            continue
        try:
            load_rgb(path)
            readable.append((image_id, path))
        except DataError as exc:  # one bad (or too large) file must not stop the run
            log.warning("skipping %s", exc)
    if not readable:
        return
    chunk = readable
    results = detect_batch(backend, [p for _, p in chunk], [i for i, _ in chunk])
    for (_, path), (detections, size) in zip(chunk, results, strict=True):
        yield path, detections, size
