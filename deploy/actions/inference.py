"""``rtdetr-deploy inference``: detections of a TensorRT engine or ONNX file on ``dataset.infer_data_sources``
(:func:`rtdetr_tao.runtime.inference.run_inference`: the same files as ``rtdetr inference``)."""

from __future__ import annotations

from pathlib import Path

from rtdetr_tao.config import ExperimentSpec
from rtdetr_tao.runtime.inference import run_inference


def run(spec: ExperimentSpec) -> Path:
    """Run ``inference.trt_engine`` (an engine or .onnx) over the inference images; returns the output folder."""
    return run_inference(spec, spec.batch_size_for("deploy_inference"))
