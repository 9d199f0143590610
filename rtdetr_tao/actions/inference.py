"""``rtdetr inference``: detections on ``dataset.infer_data_sources`` with a checkpoint or an exported ``.onnx``.

Writes under ``results_dir/inference/`` (:class:`rtdetr_tao.outputs.inference.InferenceWriter`):
``images_annotated/``, ``labels/`` (KITTI) and ``results.json`` (COCO results with the original category ids).
Class names come from ``infer_data_sources.classmap`` when given (one per line, in label order), else from the
checkpoint. An ``.onnx`` model runs in ONNX Runtime through the same code as ``rtdetr-deploy inference``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..config import ExperimentSpec
from ..data.preprocess import load_rgb
from ..engine.restore import load_trained_model
from ..engine.setup import start_job
from ..errors import SpecError
from ..eval.postprocess import postprocess
from ..outputs.classmap import read_classmap
from ..outputs.inference import InferenceWriter


def run(spec: ExperimentSpec) -> Path:
    """Run ``inference.checkpoint`` over the inference images; returns the output folder."""
    from ..data.loader import build_infer_loader

    cfg, source = spec.inference, spec.dataset.infer_data_sources
    if not cfg.checkpoint:
        raise SpecError("inference.checkpoint is not set; give the .pth or .onnx to run")
    if source is None:
        raise SpecError("dataset.infer_data_sources is not set; give {image_dir: [...]} with the images")
    if Path(cfg.checkpoint).suffix == ".onnx":
        from rtdetr_deploy.actions import inference as deploy_inference

        return deploy_inference.run(
            spec.model_copy(update={"inference": cfg.model_copy(update={"trt_engine": cfg.checkpoint})})
        )
    aug = spec.dataset.augmentation
    size = (cfg.input_height or aug.eval_spatial_size[0], cfg.input_width or aug.eval_spatial_size[1])
    batch = spec.batch_size_for("inference")
    with start_job(spec, "inference") as ctx:
        trained = load_trained_model(cfg.checkpoint, spec, eval_spatial_size=size)
        trained.check_quantized(cfg.is_quantized, "inference.is_quantized")
        model = trained.fast_model().to(ctx.device)
        cmap = trained.category_map
        names = read_classmap(source.classmap, num_classes=cmap.num_classes) if source.classmap else cmap.category_names
        writer = InferenceWriter(
            ctx.out_dir, names, conf_threshold=cfg.conf_threshold, color_map=cfg.color_map,
            outline_width=cfg.outline_width,
        )  # fmt: skip
        loader = build_infer_loader(
            source, input_size=size, preserve_aspect_ratio=aug.preserve_aspect_ratio, batch_size=batch,
            workers=spec.dataset.workers, cache_dir=spec.dataset.cache_dir,
        )  # fmt: skip
        count = 0
        for images, metas in loader:
            with torch.inference_mode():
                out = model(images.to(ctx.device))
            found = postprocess(
                out["pred_logits"].float().cpu().numpy(), out["pred_boxes"].float().cpu().numpy(),
                [m["orig_size"] for m in metas], [m["image_id"] for m in metas],
                num_select=trained.model_spec.num_select,
                letterboxes=[m["letterbox"] for m in metas] if aug.preserve_aspect_ratio else None,
            )  # fmt: skip
            for meta, detections in zip(metas, found, strict=True):
                writer.write(meta["path"], load_rgb(meta["path"]), detections)
            count += len(metas)
        total = writer.finish(cmap.label_to_category)
        ctx.outputs.final_message = f"Inference finished: {count} images, {total} detections."
        return ctx.out_dir
