"""INT8 calibration data for TensorRT, without TensorRT: batches and the cache file.

The batches use exactly the preprocessing the model was trained with — RGB in [0, 1], resized to
the engine's input, no mean/std (TAO's deploy calibrated with ImageNet mean/std, which the model
never saw). The TensorRT calibrator class itself is a thin adapter in :mod:`rtdetr_deploy.tensorrt`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from rtdetr_tao.errors import DataError
from rtdetr_tao.io import atomic_write_bytes

log = logging.getLogger(__name__)

Preprocess = Callable[[Path], np.ndarray]
"""image path -> float32 [3, H, W] in [0, 1]"""


class CalibrationBatches:
    """``num_batches`` batches of ``batch_size`` images (float32 [B, 3, H, W]), in file order."""

    def __init__(self, images: Sequence[Path], preprocess: Preprocess, batch_size: int, num_batches: int):
        if not images:
            raise DataError("gen_trt_engine.tensorrt.calibration.cal_image_dir holds no images to calibrate on")
        self.images = list(images)
        self.preprocess = preprocess
        self.batch_size = batch_size
        available = len(self.images) // batch_size
        if available == 0:
            raise DataError(f"calibration needs at least cal_batch_size={batch_size} images, found {len(self.images)}")
        if available < num_batches:
            log.warning(
                "calibration: %d images make only %d full batches of %d (cal_batches=%d); using %d",
                len(self.images), available, batch_size, num_batches, available,
            )  # fmt: skip
        self.num_batches = min(num_batches, available)

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[np.ndarray]:
        for b in range(self.num_batches):
            chunk = self.images[b * self.batch_size : (b + 1) * self.batch_size]
            yield np.ascontiguousarray(np.stack([self.preprocess(p) for p in chunk]).astype(np.float32))

    @property
    def num_images(self) -> int:
        return self.num_batches * self.batch_size


class CalibrationCache:
    """TensorRT's calibration cache file: reused when present, written (atomically) after calibration."""

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path else None

    def read(self) -> bytes | None:
        if self.path is not None and self.path.is_file() and self.path.stat().st_size > 0:
            log.info("calibration: reusing cache %s", self.path)
            return self.path.read_bytes()
        return None

    def write(self, data: bytes) -> None:
        if self.path is not None:
            atomic_write_bytes(self.path, bytes(data))
            log.info("calibration: wrote cache %s", self.path)
