"""``rtdetr inference``: detections on ``dataset.infer_data_sources`` with a checkpoint or an exported ``.onnx``.

Writes under ``results_dir/inference/`` (:class:`rtdetr_tao.outputs.inference.InferenceWriter`):
``images_annotated/``, ``labels/`` (KITTI) and ``results.json`` (COCO results with the original category ids);
for video files in ``image_dir`` and for ``infer_data_sources.stream``: ``videos/`` with an annotated video and
JSON lines per frame (:mod:`rtdetr_tao.outputs.video`).
Class names come from ``infer_data_sources.classmap`` when given (one per category in id order, or TAO's one per
id 0..max: :func:`rtdetr_tao.outputs.classmap.read_classmap`), else from the checkpoint. An ``.onnx`` model runs
in ONNX Runtime through the same code as ``rtdetr-deploy inference``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..config import ExperimentSpec
from ..data.preprocess import load_rgb
from ..data.video import split_media
from ..engine.restore import load_trained_model
from ..engine.setup import start_job
from ..eval.postprocess import postprocess
from ..outputs.classmap import read_classmap
from ..outputs.inference import InferenceWriter
from ..outputs.progress import Progress
from ..outputs.video import run_videos
from ..predictor import Predictor


def run(spec: ExperimentSpec) -> Path:
    """Run ``inference.checkpoint`` over the inference images and videos; returns the output folder."""
    cfg, source = spec.inference, spec.dataset.infer_data_sources
    if Path(cfg.checkpoint).suffix == ".onnx":
        from rtdetr_deploy.actions import inference as deploy_inference

        return deploy_inference.run(
            spec.model_copy(update={"inference": cfg.model_copy(update={"trt_engine": cfg.checkpoint})})
        )
    aug = spec.dataset.augmentation
    explicit = bool(cfg.input_height or cfg.input_width or "eval_spatial_size" in aug.model_fields_set)
    size = (cfg.input_height or aug.eval_spatial_size[0], cfg.input_width or aug.eval_spatial_size[1])
    batch = spec.batch_size_for("inference")
    with start_job(spec, "inference") as ctx:
        trained = load_trained_model(
            cfg.checkpoint, spec, eval_spatial_size=size if explicit else None,
            size_key="inference.input_height/input_width (or dataset.augmentation.eval_spatial_size)",
        )  # fmt: skip
        trained.check_quantized(cfg.is_quantized, "inference.is_quantized")
        size = trained.input_size
        cmap = trained.category_map
        names = list(cmap.category_names)
        if source.classmap:
            names = read_classmap(
                source.classmap, label_to_category=cmap.label_to_category, category_ids=cmap.defined_ids,
                default_names=names, cache_dir=spec.dataset.cache_dir,
            )  # fmt: skip
        image_dirs, videos = split_media(source.image_dir, spec.dataset.cache_dir)
        images = total = 0
        if image_dirs or not (videos or source.stream):
            writer = InferenceWriter(
                ctx.out_dir, names, conf_threshold=cfg.conf_threshold, color_map=cfg.color_map,
                outline_width=cfg.outline_width,
            )  # fmt: skip
            model = trained.fast_model().to(ctx.device)
            images = _images(ctx.device, model, trained.model_spec.num_select, writer, image_dirs, size, batch, spec)
            total = writer.finish(cmap.label_to_category)
        frames = 0
        if videos or source.stream:
            predictor = Predictor.from_trained(
                trained, device=ctx.device, input_size=size, preserve_aspect_ratio=aug.preserve_aspect_ratio
            )
            frames, found = run_videos(
                videos, source.stream, ctx.out_dir / "videos", predictor.predict_raw, names, cmap.label_to_category,
                cfg, batch,
            )  # fmt: skip
            total += found
        ctx.outputs.final_message = f"Inference finished: {images} images, {frames} video frames, {total} detections."
        return ctx.out_dir


def _images(device, model, num_select: int, writer: InferenceWriter, image_dirs: list[str], size, batch, spec) -> int:
    """Detections on the images under ``image_dirs`` into ``writer``; returns the number of images."""
    from ..data.loader import build_infer_loader

    aug = spec.dataset.augmentation
    source = spec.dataset.infer_data_sources.model_copy(update={"image_dir": image_dirs})
    loader = build_infer_loader(
        source, input_size=size, preserve_aspect_ratio=aug.preserve_aspect_ratio, batch_size=batch,
        workers=spec.dataset.workers, cache_dir=spec.dataset.cache_dir,
    )  # fmt: skip
    count = 0
    with Progress("inference", total=len(loader.dataset), unit="img") as progress:
        for images, metas in loader:
            with torch.inference_mode():
                out = model(images.to(device))
            found = postprocess(
                out["pred_logits"].float().cpu().numpy(), out["pred_boxes"].float().cpu().numpy(),
                [m["orig_size"] for m in metas], [m["image_id"] for m in metas], num_select=num_select,
                letterboxes=[m["letterbox"] for m in metas] if aug.preserve_aspect_ratio else None,
            )  # fmt: skip
            for meta, detections in zip(metas, found, strict=True):
                writer.write(meta["path"], load_rgb(meta["path"]), detections, meta["name"])
            count += len(metas)
            progress.update(len(metas))
    return count
