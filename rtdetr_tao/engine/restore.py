"""Models for inference from any weights file: ours (architecture, categories and quantization stored in it),
official RT-DETRv2 releases and Hugging Face weights (architecture from ``spec.model``, categories from the data)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from ..config import ExperimentSpec
from ..config.model import ModelSpec
from ..data.categories import CategoryMap, model_category_map
from ..errors import CheckpointError, SpecError, require

log = logging.getLogger(__name__)

INFERENCE_KEYS = {"cross_attn_method", "num_select", "eval_idx"}
"""``model.*`` keys a spec may change on a trained model (they change no weights)."""


@dataclass
class TrainedModel:
    """A model ready for inference with the label ↔ category mapping it was trained with."""

    model: nn.Module
    category_map: CategoryMap
    model_spec: ModelSpec
    source: str
    quantized: bool = False
    input_size: tuple[int, int] = (640, 640)
    """(H, W) the model was built for (anchors and position embeddings)."""
    trained_size: tuple[int, int] | None = None
    """(H, W) the checkpoint was trained and validated at (its ``dataset.augmentation.eval_spatial_size``)."""
    quantized_with: str | None = None  # the quantize.backend of a quantized checkpoint: modelopt or torchao

    def fast_model(self) -> nn.Module:
        """The model to run for inference: :func:`~rtdetr_tao.model.optimize.optimize_for_inference`'s copy (BN
        folded, RepVGG re-parameterised, channels_last), or the model itself when quantized (its quantizers sit on
        the unfolded layers; torchao's dynamic int8 activations would shift with the folded values)."""
        from ..model.optimize import optimize_for_inference

        return self.model if self.quantized else optimize_for_inference(self.model)

    def check_quantized(self, declared: bool, key: str) -> None:
        """``key`` (``<action>.is_quantized``) must say what the checkpoint holds."""
        if declared != self.quantized:
            state = "is" if self.quantized else "is not"
            raise SpecError(f"{self.source} {state} a quantized checkpoint; set {key}={str(self.quantized).lower()}")


def load_trained_model(
    path: str,
    spec: ExperimentSpec,
    *,
    eval_spatial_size: tuple[int, int] | None = None,
    size_key: str = "the input size",
) -> TrainedModel:
    """Rebuild the model of ``path`` (ours: with the architecture and categories stored in it; official or Hugging
    Face weights: with ``spec.model`` and the categories of the dataset) and load its weights (EMA when present).

    ``eval_spatial_size`` (H, W): the input size asked for explicitly (by ``size_key``); None: the size the checkpoint
    was trained at (640 x 640 for weights that do not record it). An explicit size other than the trained one is
    logged as a warning: a DETR's accuracy drops sharply away from its training resolution."""
    from ..catalog import resolve_weights
    from ..model.build import build_model
    from ..model.weights import load_torch_file, load_weights

    path = resolve_weights(path)
    if not Path(path).exists():
        raise CheckpointError(f"checkpoint {path} does not exist; set evaluate.checkpoint / inference.checkpoint")
    raw = load_torch_file(Path(path)) if Path(path).is_file() else {}
    raw = raw if isinstance(raw, dict) else {}
    spec_dict = raw.get("spec")
    category_map = model_category_map(spec.dataset, raw.get("category_map"), model=path)
    model_spec = spec.model
    if isinstance(spec_dict, dict):  # the checkpoint's architecture, with the inference-time keys the spec sets
        chosen = {k: getattr(spec.model, k) for k in INFERENCE_KEYS & spec.model.model_fields_set}
        model_spec = ModelSpec.model_validate({**spec_dict["model"], **chosen})
    trained_size = _trained_size(spec_dict)
    size = tuple(eval_spatial_size or trained_size or (640, 640))
    if trained_size is not None and size != trained_size:
        log.warning(
            "%s was trained at %dx%d (HxW) but %s is %dx%d; expect fewer and worse detections, or unset %s to run "
            "it at its trained size", path, *trained_size, size_key, *size, size_key,
        )  # fmt: skip
    model = build_model(model_spec, category_map.num_classes, eval_spatial_size=size)
    if raw.get("modelopt_state") is not None:  # a checkpoint of rtdetr quantize: quantizers first, then weights
        mto = require("modelopt.torch.opt", extra="quantize", purpose="loading a quantized checkpoint")
        model = mto.restore_from_modelopt_state(model, raw["modelopt_state"])
    if raw.get("torchao") is not None:  # int8 weights of rtdetr quantize quantize.backend=torchao
        from ..model.torchao_quant import load_quantized_state

        load_quantized_state(model, raw["model"])
        log.info("loaded %s: %d Linear layers in torchao int8", path, len(raw["torchao"]["layers"]))
        return TrainedModel(model.eval(), category_map, model_spec, path, True, size, trained_size, "torchao")
    report = load_weights(model, raw or path)
    report.source = path
    if not report.complete:
        raise CheckpointError(
            f"{path} does not fit the model ({report.summary()}); check model.* and dataset.num_classes"
        )
    log.info("%s", report.summary())
    quantized = raw.get("modelopt_state") is not None
    return TrainedModel(
        model.eval(), category_map, model_spec, path, quantized, size, trained_size, "modelopt" if quantized else None
    )


def _trained_size(spec_dict: Any) -> tuple[int, int] | None:
    """``dataset.augmentation.eval_spatial_size`` of a checkpoint's stored spec, when it records one."""
    try:
        height, width = spec_dict["dataset"]["augmentation"]["eval_spatial_size"]
        return int(height), int(width)
    except (KeyError, TypeError, ValueError):
        return None
