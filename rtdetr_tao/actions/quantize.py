"""``rtdetr quantize``: post-training quantization with NVIDIA ModelOpt or PyTorch's torchao.

The ``quantize.layers`` rules choose, for every ``Conv2d`` and ``Linear`` module, the dtype of its weights and of
its input activations: a rule matches the module's qualified name (``encoder.input_proj.0.conv``) or class name
(``Conv2d``) with fnmatch, later rules win, ``skip_names`` keep modules in float, and
``default_layer_dtype`` / ``default_activation_dtype`` apply where no rule matches.

- ``quantize.backend: modelopt``: ModelOpt calibrates the activation ranges on
  ``dataset.quant_calibration_data_sources`` with the evaluation preprocessing (static or weight-only PTQ, int8 or
  FP8; the checkpoint exports to a Q/DQ ONNX graph).
- ``quantize.backend: torchao``: torchao quantizes the chosen ``Linear`` layers to int8, weight-only (activations
  native) or with dynamic int8 activations (activations int8); no calibration, runs on the CPU; convolutions stay
  in float (see :mod:`rtdetr_tao.model.torchao_quant`). No ONNX export.

Writes under ``results_dir/quantize/``: ``quantized_model.pth`` (our checkpoint format plus ModelOpt's state or
torchao's int8 weights, read by ``rtdetr evaluate`` / ``inference``, and by ``rtdetr export
export.is_quantized=true`` for ModelOpt), ``quantization_summary.json`` (dtypes per module, the weights' size,
and mAP before/after when the calibration source has a ``json_file``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import ExperimentSpec
from ..config.dataset import DataSource, InferSource
from ..config.quantize import QuantizeSpec
from ..engine.checkpoint import save_checkpoint
from ..engine.restore import load_trained_model
from ..engine.setup import select_device, start_job
from ..errors import SpecError, require
from ..io import atomic_write_json
from ..model import torchao_quant
from ..model.quantize import LayerPlan, modelopt_config, plan_layers
from ..progress import Progress

log = logging.getLogger(__name__)


def _check_device(plans: dict[str, LayerPlan], device: torch.device) -> None:
    used = {p.weights for p in plans.values()} | {p.activations for p in plans.values()}
    fp8 = sorted(d for d in used if d.startswith("fp8"))
    if fp8 and device.type != "cuda":
        raise SpecError(
            f"quantize: {', '.join(fp8)} needs a CUDA GPU (FP8 kernels and TensorRT-only ONNX ops); use int8 on this "
            "machine or run on a GPU"
        )


def run(spec: ExperimentSpec) -> Path:
    """Quantize ``quantize.model_path`` and write the quantized checkpoint; returns its path."""
    from ..data.loader import build_eval_loader
    from ..engine.predict import predict
    from ..eval.coco import evaluate_coco

    cfg = spec.quantize
    calib = spec.dataset.quant_calibration_data_sources
    unused = sorted({"algorithm", "percentile", "calibration_batches", "backend_kwargs"} & cfg.model_fields_set)
    if cfg.backend == "torchao" and unused:
        log.warning("quantize.%s: not used by quantize.backend=torchao (no calibration)", ", quantize.".join(unused))
    device = select_device(cfg.device)
    size = tuple(spec.dataset.augmentation.eval_spatial_size)
    train = spec.train  # the job on quantize.device's type (cuda: train.device_ids picks the index)
    with start_job(
        spec, "quantize", device=device.type, device_ids=train.device_ids, seed=train.seed, cudnn=train.cudnn
    ) as ctx:
        trained = load_trained_model(cfg.model_path, spec, eval_spatial_size=size)
        model = trained.model.to(device)
        plans = plan_layers(model, cfg)
        _check_device(plans, device)

        def coco_map(module: nn.Module) -> dict[str, float] | None:
            if calib is None or calib.json_file is None:
                return None
            source = DataSource(image_dir=calib.image_dir, json_file=calib.json_file)
            dataset = spec.dataset.model_copy(update={"test_data_sources": source})
            loader, coco_gt = build_eval_loader(
                dataset, "test", category_map=trained.category_map, world_size=1, rank=0
            )
            detections, _ = predict(module, loader, device, num_select=spec.model.num_select)
            metrics = evaluate_coco(coco_gt, detections, trained.category_map.label_to_category)
            return {"mAP": metrics.AP, "mAP50": metrics.AP50}

        before = coco_map(model)
        bytes_before = torchao_quant.serialized_bytes(model.state_dict())
        if cfg.backend == "torchao":
            model, backend_state, left_in_float = _torchao_quantize(model, plans)
            plans = {name: plan for name, plan in plans.items() if name not in left_in_float}
        else:
            model, backend_state = _modelopt_quantize(model, plans, cfg, spec, calib, size, device)
            left_in_float = []
        after = coco_map(model)
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        out = ctx.out_dir / "quantized_model.pth"
        save_checkpoint(
            out,
            {
                "model": state,
                **backend_state,
                "spec": {"model": trained.model_spec.model_dump(mode="json")},
                "category_map": trained.category_map.to_dict(),
                "quantized_from": str(cfg.model_path),
            },
        )
        summary = {
            "source": str(cfg.model_path),
            "backend": cfg.backend,
            "algorithm": cfg.algorithm,
            "mode": cfg.mode,
            "calibration_batches": cfg.calibration_batches,
            "layers": {name: vars(plan) for name, plan in plans.items()},
            "left_in_float": left_in_float,
            "weights_bytes_before": bytes_before,
            "weights_bytes_after": torchao_quant.serialized_bytes(state),
            "mAP_before": before,
            "mAP_after": after,
        }
        atomic_write_json(ctx.out_dir / "quantization_summary.json", summary)
        counts: dict[str, int] = {}
        for plan in plans.values():
            key = f"weights {plan.weights} / activations {plan.activations}"
            counts[key] = counts.get(key, 0) + 1
        for key, count in sorted(counts.items()):
            log.info("%4d modules: %s", count, key)
        if before and after:
            log.info("mAP before %.4f, after %.4f", before["mAP"], after["mAP"])
        ctx.outputs.final_message = f"Quantized {len(plans)} modules into {out}."
        ctx.outputs.final_fields = {"kpi": {f"quantized_{k}": v for k, v in (after or {}).items()}}
        return out


def _modelopt_quantize(
    model: nn.Module,
    plans: dict[str, LayerPlan],
    cfg: QuantizeSpec,
    spec: ExperimentSpec,
    calib: DataSource,
    size: tuple[int, ...],
    device: torch.device,
) -> tuple[nn.Module, dict[str, Any]]:
    """ModelOpt's quantizers on ``plans``, calibrated on ``calib``; the checkpoint entries that restore them."""
    from ..data.loader import build_infer_loader

    mtq = require("modelopt.torch.quantization", extra="quantize", purpose="rtdetr quantize")
    mto = require("modelopt.torch.opt", extra="quantize", purpose="rtdetr quantize")
    images = build_infer_loader(
        InferSource(image_dir=[calib.image_dir]),
        input_size=size,
        preserve_aspect_ratio=spec.dataset.augmentation.preserve_aspect_ratio,
        batch_size=spec.batch_size_for("quantize"),
        workers=spec.dataset.workers,
        cache_dir=spec.dataset.cache_dir,
    )

    def calibrate(module: nn.Module) -> None:
        total = min(cfg.calibration_batches, len(images))
        with torch.no_grad(), Progress("calibration", total=total, unit="batch") as progress:
            for index, (batch, _) in enumerate(images):
                if index == cfg.calibration_batches:
                    break
                module(batch.to(device))
                progress.update()

    model = mtq.quantize(model, modelopt_config(plans, cfg), forward_loop=calibrate)
    return model, {"modelopt_state": mto.modelopt_state(model)}


def _torchao_quantize(model: nn.Module, plans: dict[str, LayerPlan]) -> tuple[nn.Module, dict[str, Any], list[str]]:
    """torchao int8 on the planned Linear layers; (model, the checkpoint entry naming the schemes, the planned
    modules torchao leaves in float)."""
    import importlib.metadata

    schemes, left = torchao_quant.torchao_schemes(model, {n: (p.weights, p.activations) for n, p in plans.items()})
    if not schemes:
        raise SpecError(
            "quantize.backend=torchao quantizes Linear layers, and the rules choose none; add a rule such as "
            "{module_name: Linear, weights: {dtype: int8}}"
        )
    if left:
        log.warning(
            "torchao quantizes Linear layers only: %d planned modules stay in float (Conv2d, attention out_proj)",
            len(left),
        )
    model = torchao_quant.quantize_linear(model, schemes)
    return model, {"torchao": {"version": importlib.metadata.version("torchao"), "layers": schemes}}, left
