"""A trained model as an ONNX graph for ONNX Runtime and TensorRT (the library behind ``rtdetr export``).

The graph follows the contract of :mod:`rtdetr_tao.metadata`: input ``images`` [N, 3, H, W] (RGB in [0, 1]) and
``orig_target_sizes`` [N, 2] (w, h); outputs ``labels``, ``boxes`` (xyxy pixels), ``scores`` (top-``num_select``
over queries x classes), or without a post-processor the raw ``pred_logits`` / ``pred_boxes``. Anchors and
position embeddings are constants of the export size. Plain arguments only: the spec is read by the action.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from .errors import ExportError, require
from .io import atomic_open, atomic_write_bytes
from .metadata import METADATA_KEY, ModelMetadata, write_sidecar
from .model.postprocess import PostProcessor
from .progress import stage
from .runtime.backends import OnnxRuntimeBackend


class ExportModule(nn.Module):
    """The detector with its post-processor, as exported: ``(images, orig_target_sizes) → labels, boxes, scores``,
    or ``images → pred_logits, pred_boxes`` when ``postprocessor`` is None."""

    def __init__(self, model: nn.Module, postprocessor: PostProcessor | None) -> None:
        super().__init__()
        self.model, self.postprocessor = model, postprocessor

    def forward(self, images: Tensor, orig_target_sizes: Tensor | None = None) -> tuple[Tensor, ...]:
        outputs = self.model(images)
        if self.postprocessor is None:
            return outputs["pred_logits"], outputs["pred_boxes"]
        return self.postprocessor.select(outputs["pred_logits"], outputs["pred_boxes"], orig_target_sizes)


def export_onnx(module: ExportModule, path: Path, size: tuple[int, int], *, batch: int, opset: int, verbose: bool):
    """Trace ``module`` into ``path`` (written atomically) with TorchScript-based export (dynamo=False)."""
    raw = module.postprocessor is None
    inputs = ["images"] if raw else ["images", "orig_target_sizes"]
    outputs = ["pred_logits", "pred_boxes"] if raw else ["labels", "boxes", "scores"]
    n = 1 if batch == -1 else batch
    example = (torch.rand(n, 3, *size),) if raw else (torch.rand(n, 3, *size), torch.full((n, 2), 640.0))
    dynamic = {name: {0: "N"} for name in inputs + outputs} if batch == -1 else None
    try:
        with (
            atomic_open(path) as handle,
            stage(f"ONNX export to {path.name}"),
            warnings.catch_warnings(),
            torch.no_grad(),
        ):
            warnings.simplefilter("ignore")  # tracer warnings about Python control flow on shapes
            # the TorchScript exporter writes through a file object as it does to a path
            torch.onnx.export(
                module, example, handle, input_names=inputs, output_names=outputs, dynamic_axes=dynamic,
                opset_version=opset, dynamo=False, verbose=verbose,
            )  # fmt: skip
    except Exception as exc:
        raise ExportError(f"ONNX export failed: {type(exc).__name__}: {exc}") from None


def embed_metadata(path: Path, metadata: ModelMetadata) -> None:
    """Store ``metadata`` in the ONNX file's metadata_props (rewritten atomically) and in the sidecar JSON."""
    onnx = require("onnx", extra="onnx", purpose="writing ONNX metadata")
    graph = onnx.load(str(path))
    del graph.metadata_props[:]
    graph.metadata_props.add(key=METADATA_KEY, value=metadata.to_json())
    atomic_write_bytes(path, graph.SerializeToString())
    write_sidecar(path, metadata)


def check_parity(module: ExportModule, path: Path, size: tuple[int, int], batch: int) -> float:
    """Max |ONNX Runtime - PyTorch| over the outputs on a random batch (labels must agree exactly); ``path`` carries
    its metadata (:func:`embed_metadata`)."""
    n = 2 if batch == -1 else batch
    images = torch.rand(n, 3, *size, generator=torch.Generator().manual_seed(0))
    sizes = torch.tensor([[640.0, 480.0]] * n)
    with torch.no_grad():
        expected = module(images) if module.postprocessor is None else module(images, sizes)
    backend = OnnxRuntimeBackend(
        path, providers=["CPUExecutionProvider"], purpose="checking the export with ONNX Runtime"
    )
    got = backend.run(images.numpy(), sizes.numpy()).values()  # orig_target_sizes only where the graph has it
    worst = 0.0
    for want, have in zip(expected, got, strict=True):
        want = want.numpy()
        if want.dtype == np.int64:
            if not np.array_equal(want, have):
                worst = max(worst, float("inf"))
            continue
        worst = max(worst, float(np.abs(want - have).max()))
    return worst
