"""Runtimes for exported models: ONNX Runtime (any machine) and TensorRT (NVIDIA GPUs), one interface.

A backend runs one batch within its batch limits; :func:`run_batched` splits any number of images
into such batches, pads a batch smaller than the engine's minimum by repeating its last image, and
slices the outputs back to the real images.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from ..errors import DataError, require
from ..metadata import ModelMetadata, read_metadata

ENGINE_SUFFIXES = (".engine", ".plan", ".trt")


class Backend(Protocol):
    """One exported model, ready to run."""

    metadata: ModelMetadata
    min_batch: int
    max_batch: int

    def run(self, images: np.ndarray, orig_sizes: np.ndarray) -> dict[str, np.ndarray]:
        """images float32 [B, 3, H, W], orig_sizes float32 [B, 2] (w, h) → the graph's outputs by name."""
        ...


def run_batched(backend: Backend, images: np.ndarray, orig_sizes: np.ndarray) -> dict[str, np.ndarray]:
    """Run any number of images through ``backend`` in batches it accepts; outputs have len(images) rows."""
    n = len(images)
    parts: list[dict[str, np.ndarray]] = []
    for start in range(0, n, backend.max_batch):
        chunk = slice(start, min(start + backend.max_batch, n))
        batch, sizes = images[chunk], orig_sizes[chunk]
        real = len(batch)
        if real < backend.min_batch:
            pad = backend.min_batch - real
            batch = np.concatenate([batch, np.repeat(batch[-1:], pad, axis=0)])
            sizes = np.concatenate([sizes, np.repeat(sizes[-1:], pad, axis=0)])
        outputs = backend.run(np.ascontiguousarray(batch), np.ascontiguousarray(sizes))
        parts.append({name: value[:real] for name, value in outputs.items()})
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]} if parts else {}


class OnnxRuntimeBackend:
    """An exported ``.onnx`` file (with its metadata) in ONNX Runtime: CPU, or CUDA when onnxruntime-gpu is
    installed, unless ``providers`` says otherwise. ``purpose`` names the caller in the install hint."""

    def __init__(
        self,
        path: str | Path,
        *,
        providers: Sequence[str] | None = None,
        max_batch: int = 8,
        purpose: str = "Running an ONNX model",
    ):
        ort = require("onnxruntime", extra="onnx", purpose=purpose)
        self.path = Path(path)
        if not self.path.is_file():
            raise DataError(f"ONNX model not found: {self.path}")
        self.metadata = read_metadata(self.path)
        available = ort.get_available_providers()
        chosen = [p for p in (providers or ("CUDAExecutionProvider", "CPUExecutionProvider")) if p in available]
        self.session = ort.InferenceSession(str(self.path), providers=chosen)
        self.input_names = [i.name for i in self.session.get_inputs()]
        batch_dim = self.session.get_inputs()[0].shape[0]
        fixed = batch_dim if isinstance(batch_dim, int) else None
        self.min_batch = fixed or 1
        self.max_batch = fixed or max_batch

    def run(self, images: np.ndarray, orig_sizes: np.ndarray) -> dict[str, np.ndarray]:
        feeds = {"images": images.astype(np.float32, copy=False)}
        if "orig_target_sizes" in self.input_names:
            feeds["orig_target_sizes"] = orig_sizes.astype(np.float32, copy=False)
        names = [o.name for o in self.session.get_outputs()]
        return dict(zip(names, self.session.run(names, feeds), strict=True))


def open_backend(path: str | Path, *, backend: str = "auto", max_batch: int = 8) -> Backend:
    """The runtime for ``path``: TensorRT for .engine/.plan/.trt, ONNX Runtime for .onnx (``backend`` forces one)."""
    path = Path(path)
    kind = backend if backend != "auto" else ("tensorrt" if path.suffix in ENGINE_SUFFIXES else "onnxruntime")
    if kind == "tensorrt":
        from .tensorrt import TensorRTBackend

        return TensorRTBackend(path)
    if kind == "onnxruntime":
        return OnnxRuntimeBackend(path, max_batch=max_batch)
    raise DataError(f"unknown backend '{backend}': use auto, onnxruntime or tensorrt")
