"""Running a model over an evaluation loader: detections per image (and, optionally, the loss).

Post-processing is the shared numpy implementation (``rtdetr_tao.eval.postprocess``), the same one
the ONNX Runtime and TensorRT paths use, so every backend is scored by identical code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
from torch import nn

from ..eval.detections import ImageDetections
from ..eval.postprocess import Letterbox, postprocess
from ..progress import Progress
from .distributed import all_gather_objects, all_reduce_mean


@torch.no_grad()
def predict(
    model: nn.Module,
    loader: Iterable[tuple[torch.Tensor, list[dict[str, Any]]]],
    device: torch.device,
    *,
    num_select: int,
    criterion: nn.Module | None = None,
    autocast: Callable[[], AbstractContextManager[Any]] = nullcontext,
) -> tuple[list[ImageDetections], dict[str, float]]:
    """Detections for every image of ``loader`` (this rank's share), and the mean weighted losses
    when a ``criterion`` is given (targets must then carry ``labels`` and ``boxes``).

    Each target needs ``image_id`` and ``orig_size`` (w, h), and ``letterbox`` when the loader
    kept the aspect ratio.
    """
    was_training = model.training
    model.eval()
    detections: list[ImageDetections] = []
    loss_sums: dict[str, float] = {}
    batches = 0
    progress = Progress("predict", total=len(loader) if hasattr(loader, "__len__") else None, unit="batch")
    try:
        for images, targets in loader:
            images = images.to(device, non_blocking=True)
            with autocast():
                outputs = model(images)
            logits, boxes = outputs["pred_logits"].float(), outputs["pred_boxes"].float()
            if criterion is not None:
                device_targets = [{k: v.to(device) for k, v in t.items() if k in ("labels", "boxes")} for t in targets]
                losses = criterion({"pred_logits": logits, "pred_boxes": boxes}, device_targets)
                for key, value in {"loss": sum(losses.values()), **losses}.items():
                    loss_sums[key] = loss_sums.get(key, 0.0) + float(value)
                batches += 1
            letterboxes = [t.get("letterbox") for t in targets]
            detections += postprocess(
                logits.cpu().numpy(),
                boxes.cpu().numpy(),
                [_size(t["orig_size"]) for t in targets],
                [int(t["image_id"]) for t in targets],
                num_select=num_select,
                letterboxes=letterboxes if all(isinstance(lb, Letterbox) for lb in letterboxes) else None,
            )
            progress.update()
    finally:
        progress.close()
        model.train(was_training)
    mean_losses = {k: v / batches for k, v in loss_sums.items()} if batches else {}
    return detections, mean_losses


def gather_predictions(
    detections: list[ImageDetections], losses: dict[str, float], device: torch.device
) -> tuple[list[ImageDetections], dict[str, float]]:
    """Every rank's detections (concatenated) and the losses averaged over ranks."""
    parts = all_gather_objects(detections)
    return [d for part in parts for d in part], all_reduce_mean(losses, device)


def _size(value: Any) -> tuple[int, int]:
    w, h = (int(v) for v in (value.tolist() if torch.is_tensor(value) else value))
    return w, h
