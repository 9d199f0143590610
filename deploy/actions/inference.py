"""``rtdetr-deploy inference``: detections of a TensorRT engine or ONNX file on ``dataset.infer_data_sources``.

Writes the same files as ``rtdetr inference`` (:class:`rtdetr_tao.outputs.inference.InferenceWriter`, and
``videos/`` for video files and ``infer_data_sources.stream``: :mod:`rtdetr_tao.outputs.video`). Class
names come from ``infer_data_sources.classmap`` (either layout of the same reader as ``rtdetr inference``) or else
from the model's metadata.
"""

from __future__ import annotations

from pathlib import Path

from rtdetr_tao.config import ExperimentSpec
from rtdetr_tao.data.preprocess import load_rgb, named_images
from rtdetr_tao.data.video import split_media
from rtdetr_tao.outputs.classmap import read_classmap
from rtdetr_tao.outputs.inference import InferenceWriter
from rtdetr_tao.outputs.job import job_outputs
from rtdetr_tao.outputs.progress import Progress
from rtdetr_tao.outputs.video import run_videos

from ..predict import detect, detect_images
from ..runtime import open_backend


def run(spec: ExperimentSpec) -> Path:
    """Run ``inference.trt_engine`` (an engine or .onnx) over the inference images; returns the output folder."""
    cfg, source = spec.inference, spec.dataset.infer_data_sources
    batch = spec.batch_size_for("deploy_inference")
    with job_outputs(spec, "deploy_inference") as job:
        backend = open_backend(cfg.trt_engine, max_batch=batch)
        meta = backend.metadata
        names = meta.class_names
        if source.classmap:
            names = read_classmap(
                source.classmap, label_to_category=meta.label_to_category,
                category_ids=meta.category_ids or None, default_names=names, cache_dir=spec.dataset.cache_dir,
            )  # fmt: skip
        image_dirs, videos = split_media(source.image_dir, spec.dataset.cache_dir)
        paths: list[Path] = []
        total = frames = 0
        if image_dirs or not (videos or source.stream):
            writer = InferenceWriter(
                job.out_dir, names, conf_threshold=cfg.conf_threshold, color_map=cfg.color_map,
                outline_width=cfg.outline_width,
            )  # fmt: skip
            named = named_images(image_dirs, spec.dataset.cache_dir)
            paths = [path for path, _ in named]
            with Progress("inference", total=len(paths), unit="img") as progress:
                for path, found, _ in detect(backend, enumerate(paths), batch, skip_unreadable=True):
                    writer.write(path, load_rgb(path), found, named[found.image_id][1])
                    progress.update()
            total = writer.finish(meta.label_to_category)
        if videos or source.stream:
            frames, found_in_videos = run_videos(
                videos, source.stream, job.out_dir / "videos",
                lambda images: detect_images(backend, images, list(range(len(images)))), names,
                meta.label_to_category, cfg, batch,
            )  # fmt: skip
            total += found_in_videos
        job.final_message = f"Inference finished: {len(paths)} images, {frames} video frames, {total} detections."
        return job.out_dir
