"""``rtdetr inference``: detections on ``dataset.infer_data_sources`` with a checkpoint or an exported ``.onnx``.

Writes under ``results_dir/inference/`` (:class:`rtdetr_tao.outputs.inference.InferenceWriter`):
``images_annotated/``, ``labels/`` (KITTI) and ``results.json`` (COCO results with the original category ids);
for video files in ``image_dir`` and for ``infer_data_sources.stream``: ``videos/`` with an annotated video and
JSON lines per frame (:mod:`rtdetr_tao.outputs.video`).
Class names come from ``infer_data_sources.classmap`` when given (one per category in id order, or TAO's one per
id 0..max: :func:`rtdetr_tao.outputs.classmap.read_classmap`), else from the checkpoint. An ``.onnx`` model runs
in ONNX Runtime through the same job as ``rtdetr-deploy inference`` (:mod:`rtdetr_tao.runtime.inference`).
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..config import ExperimentSpec
from ..data.preprocess import load_rgb
from ..engine.restore import load_trained_model
from ..engine.setup import start_job
from ..eval.postprocess import postprocess
from ..outputs.classmap import read_classmap
from ..outputs.inference import InferenceWriter, write_inference
from ..outputs.video import Detect
from ..predictor import Predictor
from ..progress import Progress
from ..runtime.inference import run_inference


def run(spec: ExperimentSpec) -> Path:
    """Run ``inference.checkpoint`` over the inference images and videos; returns the output folder."""
    cfg, source = spec.inference, spec.dataset.infer_data_sources
    if Path(cfg.checkpoint).suffix == ".onnx":
        onnx_spec = spec.model_copy(update={"inference": cfg.model_copy(update={"trt_engine": cfg.checkpoint})})
        return run_inference(onnx_spec, onnx_spec.batch_size_for("deploy_inference"))
    aug = spec.dataset.augmentation
    explicit = bool(cfg.input_height or cfg.input_width or "eval_spatial_size" in aug.model_fields_set)
    size = (cfg.input_height or aug.eval_spatial_size[0], cfg.input_width or aug.eval_spatial_size[1])
    batch = spec.batch_size_for("inference")
    train = spec.train  # one process on train.device (inference.num_gpus and gpu_ids are compatibility-only)
    with start_job(
        spec, "inference", device=train.device, device_ids=train.device_ids, seed=train.seed, cudnn=train.cudnn
    ) as ctx:
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

        def write_images(writer: InferenceWriter, image_dirs: list[str]) -> int:
            model = trained.fast_model().to(ctx.device)
            return _images(ctx.device, model, trained.model_spec.num_select, writer, image_dirs, size, batch, spec)

        def video_detector() -> Detect:
            return Predictor.from_trained(
                trained, device=ctx.device, input_size=size, preserve_aspect_ratio=aug.preserve_aspect_ratio
            ).predict_raw

        ctx.outputs.final_message = write_inference(
            ctx.out_dir, source, cfg, names, cmap.label_to_category, cache_dir=spec.dataset.cache_dir,
            batch_size=batch, write_images=write_images, video_detector=video_detector,
        )  # fmt: skip
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
