"""``rtdetr-deploy gen_trt_engine``: a TensorRT engine from the ONNX file of ``rtdetr export`` (or ``quantize``).

Writes ``gen_trt_engine.trt_engine`` atomically, with the model metadata beside it (``<engine>.json``) so that
``rtdetr-deploy evaluate / inference`` know the classes and the input size. INT8 from a graph without Q/DQ nodes
calibrates on ``tensorrt.calibration.cal_image_dir`` with the training preprocessing ([0, 1] RGB, no mean/std).
"""

from __future__ import annotations

import logging
from pathlib import Path

from rtdetr_tao.config import ExperimentSpec
from rtdetr_tao.data.preprocess import load_rgb, source_images, to_model_input
from rtdetr_tao.io import atomic_write_text
from rtdetr_tao.metadata import read_metadata, sidecar_path
from rtdetr_tao.outputs.job import job_outputs

from ..calibration import CalibrationBatches, CalibrationCache
from ..tensorrt import BuildSettings, build_engine, has_qdq_nodes

log = logging.getLogger(__name__)


def calibration_batches(spec: ExperimentSpec, input_size: tuple[int, int]) -> CalibrationBatches | None:
    """The calibration images of the spec as batches, or None when it names none."""
    calib = spec.gen_trt_engine.tensorrt.calibration
    if not calib.cal_image_dir:
        return None
    images = [p for d in calib.cal_image_dir for p in source_images(d, spec.dataset.cache_dir)]
    return CalibrationBatches(
        images, lambda p: to_model_input(load_rgb(p), input_size)[0], calib.cal_batch_size, calib.cal_batches
    )


def run(spec: ExperimentSpec) -> Path:
    """Build the engine; returns its path."""
    cfg = spec.gen_trt_engine
    onnx_path, engine_path = Path(cfg.onnx_file), Path(cfg.trt_engine)
    with job_outputs(spec, "gen_trt_engine") as job:
        metadata = read_metadata(onnx_path)
        trt = cfg.tensorrt
        fixed = cfg.batch_size if cfg.batch_size > 0 else None
        settings = BuildSettings(
            data_type=trt.data_type,
            workspace_mb=trt.workspace_size,
            min_batch=fixed or trt.min_batch_size,
            opt_batch=fixed or trt.opt_batch_size,
            max_batch=fixed or trt.max_batch_size,
            layers_precision=tuple(trt.layers_precision),
            timing_cache=Path(cfg.timing_cache) if cfg.timing_cache else None,
            verbose=cfg.verbose,
        )
        batches = None
        if trt.data_type == "INT8" and not has_qdq_nodes(onnx_path):
            batches = calibration_batches(spec, tuple(metadata.input_size))
        build_engine(onnx_path, engine_path, settings, batches, CalibrationCache(trt.calibration.cal_cache_file))
        atomic_write_text(sidecar_path(engine_path), metadata.to_json() + "\n")
        job.final_message = f"TensorRT engine written to {engine_path}."
        return engine_path
