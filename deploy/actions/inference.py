"""``rtdetr-deploy inference``: detections of a TensorRT engine or ONNX file on ``dataset.infer_data_sources``.

Writes the same files as ``rtdetr inference`` (:class:`rtdetr_tao.outputs.inference.InferenceWriter`). Class
names come from ``infer_data_sources.classmap`` (one name per line, in label order: the same reader as
``rtdetr inference``) or else from the model's metadata.
"""

from __future__ import annotations

from pathlib import Path

from rtdetr_tao.config import ExperimentSpec
from rtdetr_tao.data.preprocess import list_images, load_rgb
from rtdetr_tao.errors import SpecError
from rtdetr_tao.outputs.classmap import read_classmap
from rtdetr_tao.outputs.inference import InferenceWriter
from rtdetr_tao.outputs.job import job_outputs

from ..predict import detect
from ..runtime import open_backend


def run(spec: ExperimentSpec) -> Path:
    """Run ``inference.trt_engine`` (an engine or .onnx) over the inference images; returns the output folder."""
    from rtdetr_tao.data.sources import resolve_image_dir

    cfg, source = spec.inference, spec.dataset.infer_data_sources
    if not cfg.trt_engine:
        raise SpecError("inference.trt_engine is not set; give the .engine (or .onnx) to run")
    if source is None:
        raise SpecError("dataset.infer_data_sources is not set; give {image_dir: [...]} with the images")
    batch = spec.batch_size_for("deploy_inference")
    with job_outputs(spec, "deploy_inference") as job:
        backend = open_backend(cfg.trt_engine, max_batch=batch)
        meta = backend.metadata
        names = meta.class_names
        if source.classmap:
            names = read_classmap(source.classmap, num_classes=len(meta.class_names))
        writer = InferenceWriter(
            job.out_dir, names, conf_threshold=cfg.conf_threshold, color_map=cfg.color_map,
            outline_width=cfg.outline_width,
        )  # fmt: skip
        paths = [p for d in source.image_dir for p in list_images(resolve_image_dir(d, spec.dataset.cache_dir))]
        for path, found, _ in detect(backend, enumerate(paths), batch, skip_unreadable=True):
            writer.write(path, load_rgb(path), found)
        total = writer.finish(meta.label_to_category)
        job.final_message = f"Inference finished: {len(paths)} images, {total} detections."
        return job.out_dir
