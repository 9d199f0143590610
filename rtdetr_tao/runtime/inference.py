"""The inference job of an exported model (TensorRT engine or ONNX file) on ``dataset.infer_data_sources``, without
PyTorch: ``rtdetr-deploy inference``, and ``rtdetr inference`` with an ``.onnx`` checkpoint.

Writes the same files as ``rtdetr inference`` (:class:`rtdetr_tao.outputs.inference.InferenceWriter`, and
``videos/`` for video files and ``infer_data_sources.stream``: :mod:`rtdetr_tao.outputs.video`) under the
``deploy_inference`` folder. Class names come from ``infer_data_sources.classmap`` (either layout of the same reader
as ``rtdetr inference``) or else from the model's metadata.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from ..config import ExperimentSpec
from ..data.preprocess import load_rgb, named_images
from ..eval.detections import ImageDetections
from ..outputs.classmap import read_classmap
from ..outputs.inference import InferenceWriter, write_inference
from ..outputs.job import job_outputs
from ..progress import Progress
from .backends import open_backend
from .detect import detect, detect_images


def run_inference(spec: ExperimentSpec, batch: int) -> Path:
    """Run ``inference.trt_engine`` (an engine or .onnx) over the inference images and videos, ``batch`` images per
    call; returns the output folder."""
    cfg, source = spec.inference, spec.dataset.infer_data_sources
    with job_outputs(spec, "deploy_inference") as job:
        backend = open_backend(cfg.trt_engine, max_batch=batch)
        meta = backend.metadata
        names = meta.class_names
        if source.classmap:
            names = read_classmap(
                source.classmap, label_to_category=meta.label_to_category,
                category_ids=meta.category_ids or None, default_names=names, cache_dir=spec.dataset.cache_dir,
            )  # fmt: skip

        def write_images(writer: InferenceWriter, image_dirs: list[str]) -> int:
            named = named_images(image_dirs, spec.dataset.cache_dir)
            paths = [path for path, _ in named]
            with Progress("inference", total=len(paths), unit="img") as progress:
                for path, found, _ in detect(backend, enumerate(paths), batch, skip_unreadable=True):
                    writer.write(path, load_rgb(path), found, named[found.image_id][1])
                    progress.update()
            return len(paths)

        def frames(images: list[Image.Image]) -> list[ImageDetections]:
            return detect_images(backend, images, list(range(len(images))))

        job.final_message = write_inference(
            job.out_dir, source, cfg, names, meta.label_to_category, cache_dir=spec.dataset.cache_dir,
            batch_size=batch, write_images=write_images, video_detector=lambda: frames,
        )  # fmt: skip
        return job.out_dir
