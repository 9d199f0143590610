"""``rtdetr-deploy inference``: detections of a TensorRT engine or ONNX file on ``dataset.infer_data_sources``
(:func:`rtdetr_tao.runtime.inference.run_inference`: the same files as ``rtdetr inference``)."""

from __future__ import annotations

from pathlib import Path

from rtdetr_tao.config import ExperimentSpec
from rtdetr_tao.errors import SpecError
from rtdetr_tao.runtime.inference import run_inference


def run(spec: ExperimentSpec) -> Path:
    """Run ``inference.trt_engine`` (an engine or .onnx) over the inference images; returns the output folder."""
    cfg, source = spec.inference, spec.dataset.infer_data_sources
    if not cfg.trt_engine:
        raise SpecError("inference.trt_engine is not set; give the .engine (or .onnx) to run")
    if source is None:
        raise SpecError("dataset.infer_data_sources is not set; give {image_dir: [...]} with the images")
    batch = spec.batch_size_for("deploy_inference")
    return run_inference(spec, batch)
