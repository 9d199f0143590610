"""rtdetr_tao: train, evaluate, export, quantize, distill and deploy RT-DETRv2 detectors.

The command line is ``rtdetr <action> -e spec.yaml``. From Python::

    import rtdetr_tao
    model = rtdetr_tao.build_model({"preset": "s"}, num_classes=80)
    report = rtdetr_tao.load_weights(model, "model_epoch_071.pth")
    detections = rtdetr_tao.Predictor.from_checkpoint("model_best.pth").predict("image.jpg")

Heavy modules (torch) load on first use, so ``import rtdetr_tao`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "build_model": "rtdetr_tao.model.build",
    "load_weights": "rtdetr_tao.model.weights",
    "Predictor": "rtdetr_tao.predictor",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'rtdetr_tao' has no attribute '{name}'")
