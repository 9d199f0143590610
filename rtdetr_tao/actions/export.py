"""``rtdetr export``: a trained model as an ONNX graph for ONNX Runtime and TensorRT.

The graph (built by :mod:`rtdetr_tao.export`) follows the contract of :mod:`rtdetr_tao.metadata`: input
``images`` [N, 3, H, W] (RGB in [0, 1]) and ``orig_target_sizes`` [N, 2] (w, h); outputs ``labels``, ``boxes``
(xyxy pixels), ``scores`` (top-``num_select`` over queries x classes), or with ``export.raw_outputs`` the raw
``pred_logits`` / ``pred_boxes``. A checkpoint of ``rtdetr quantize`` exports with QuantizeLinear /
DequantizeLinear nodes (explicit quantization for TensorRT). The class names, category ids and input size travel
in the file's metadata and in ``<onnx_file>.json``. With ``export.check_parity`` ONNX Runtime is compared with
PyTorch on a random batch.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import torch
from torch import nn

from ..config import ExperimentSpec
from ..engine.restore import load_trained_model
from ..engine.setup import start_job
from ..errors import ExportError, SpecError, require
from ..export import ExportModule, check_parity, embed_metadata, export_onnx
from ..metadata import ModelMetadata
from ..model.postprocess import PostProcessor
from ..progress import stage

log = logging.getLogger(__name__)

PARITY_ATOL = 1e-3


def compare_sizes(trained, export_size: tuple[int, int], trained_size: tuple[int, int]) -> str:
    """How the model fares at the export size vs its trained size on the same images (the check batch, resized):
    the mean best score per image at each size."""
    from ..model.build import build_model

    images = torch.rand(2, 3, *trained_size, generator=torch.Generator().manual_seed(0))
    scores = []
    for size in (export_size, trained_size):
        model = build_model(trained.model_spec, trained.category_map.num_classes, eval_spatial_size=size)
        model.load_state_dict(trained.model.state_dict())
        with torch.no_grad():
            logits = model.eval()(nn.functional.interpolate(images, size=size, mode="bilinear"))["pred_logits"]
        scores.append(float(logits.sigmoid().flatten(1).max(1).values.mean()))
    return (
        f"the model was trained at {trained_size[0]}x{trained_size[1]}: mean best score {scores[0]:.3f} at the export "
        f"size vs {scores[1]:.3f} at the trained size"
    )


def run(spec: ExperimentSpec) -> Path:
    """Export ``export.checkpoint`` to ``export.onnx_file``; returns the ONNX path."""
    cfg = spec.export
    explicit = bool({"input_height", "input_width"} & cfg.model_fields_set)
    device = "cpu" if cfg.on_cpu or not torch.cuda.is_available() else f"cuda:{cfg.gpu_id}"
    train = spec.train  # export.on_cpu / gpu_id choose the device; seed and cuDNN switches as training's
    with start_job(
        spec, "export", device=device, device_ids=train.device_ids, seed=train.seed, cudnn=train.cudnn
    ) as ctx:
        path = Path(cfg.onnx_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        trained = load_trained_model(
            cfg.checkpoint, spec, eval_spatial_size=(cfg.input_height, cfg.input_width) if explicit else None,
            size_key="export.input_height/input_width",
        )  # fmt: skip
        if trained.quantized_with == "torchao":
            raise ExportError(
                f"{cfg.checkpoint} was quantized with quantize.backend=torchao, whose int8 tensors torch.onnx cannot "
                "export; export the float checkpoint, or quantize with quantize.backend=modelopt for a Q/DQ graph"
            )
        trained.check_quantized(cfg.is_quantized, "export.is_quantized")
        size = trained.input_size
        if size[0] % 32 or size[1] % 32:
            raise SpecError(f"export.input_height/input_width {size[0]}x{size[1]} must be multiples of 32")
        num_select = trained.model_spec.num_select
        # BN folded and RepVGG blocks re-parameterised: fewer nodes for ONNX Runtime and TensorRT
        module = ExportModule(trained.fast_model(), None if cfg.raw_outputs else PostProcessor(num_select)).eval()
        export_onnx(module, path, size, batch=cfg.batch_size, opset=cfg.opset_version, verbose=cfg.verbose)
        if cfg.simplify:
            onnxslim = require("onnxslim", extra="onnx", purpose="export.simplify")
            with stage(f"onnxslim on {path.name}"):
                onnxslim.slim(str(path), str(path))
        metadata = ModelMetadata(
            class_names=list(trained.category_map.category_names),
            label_to_category=list(trained.category_map.label_to_category),
            category_ids=list(trained.category_map.defined_ids),
            input_size=size,
            outputs="raw" if cfg.raw_outputs else "postprocessed",
            num_select=num_select,
            preserve_aspect_ratio=spec.dataset.augmentation.preserve_aspect_ratio,
            model=trained.model_spec.model_dump(mode="json"),
            spec_sha256=hashlib.sha256(spec.model_dump_json().encode()).hexdigest(),
        )
        embed_metadata(path, metadata)
        batch = "dynamic" if cfg.batch_size == -1 else str(cfg.batch_size)
        message = f"Exported {path} (opset {cfg.opset_version}, {batch} batch)"
        if cfg.check_parity and not cfg.is_quantized:
            with stage("parity check: ONNX Runtime vs PyTorch"):
                worst = check_parity(module, path, size, cfg.batch_size)
            if not worst <= PARITY_ATOL:
                raise ExportError(
                    f"ONNX Runtime disagrees with PyTorch on {path}: max difference {worst:.3g} > {PARITY_ATOL}; "
                    "try another export.opset_version, or export.check_parity=false to keep the file anyway"
                )
            message += f"; ONNX Runtime vs PyTorch at {size[0]}x{size[1]}: max difference {worst:.2e}"
            ctx.outputs.final_fields = {"kpi": {"onnx_max_abs_diff": worst}}
        if not trained.quantized and trained.trained_size not in (None, size):
            message += "; " + compare_sizes(trained, size, trained.trained_size)
        log.info(message)
        ctx.outputs.final_message = message + "."
        return path
