"""Models for inference from any weights file: ours (architecture, categories and quantization stored in it),
official RT-DETRv2 releases and Hugging Face weights (architecture from ``spec.model``, categories from the data)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from ..config import ExperimentSpec
from ..errors import CheckpointError, SpecError, require

log = logging.getLogger(__name__)

INFERENCE_KEYS = {"cross_attn_method", "num_select", "eval_idx"}
"""``model.*`` keys a spec may change on a trained model (they change no weights)."""


@dataclass
class TrainedModel:
    """A model ready for inference with the label ↔ category mapping it was trained with."""

    model: nn.Module
    category_map: Any  # rtdetr_tao.data.categories.CategoryMap
    model_spec: Any  # rtdetr_tao.config.model.ModelSpec
    source: str
    quantized: bool = False

    def fast_model(self) -> nn.Module:
        """The model to run for inference: :func:`~rtdetr_tao.model.optimize.optimize_for_inference`'s copy (BN
        folded, RepVGG re-parameterised, channels_last), or the model itself when quantized (its quantizers sit on
        the unfolded layers)."""
        from ..model.optimize import optimize_for_inference

        return self.model if self.quantized else optimize_for_inference(self.model)

    def check_quantized(self, declared: bool, key: str) -> None:
        """``key`` (``<action>.is_quantized``) must say what the checkpoint holds."""
        if declared != self.quantized:
            state = "is" if self.quantized else "is not"
            raise SpecError(f"{self.source} {state} a quantized checkpoint; set {key}={str(self.quantized).lower()}")


def load_trained_model(
    path: str, spec: ExperimentSpec, *, eval_spatial_size: tuple[int, int] | None = None
) -> TrainedModel:
    """Rebuild the model of ``path`` (ours: with the architecture and categories stored in it; official or Hugging
    Face weights: with ``spec.model`` and the categories of the dataset) and load its weights (EMA when present)."""
    from ..config.model import ModelSpec
    from ..data.categories import CategoryMap, category_map_from_sources
    from ..model.build import build_model
    from ..model.weights import load_torch_file, load_weights

    if not Path(path).exists():
        raise CheckpointError(f"checkpoint {path} does not exist; set evaluate.checkpoint / inference.checkpoint")
    raw = load_torch_file(Path(path)) if Path(path).is_file() else {}
    raw = raw if isinstance(raw, dict) else {}
    spec_dict = raw.get("spec")
    if raw.get("category_map"):
        category_map = CategoryMap.from_dict(raw["category_map"])
    else:
        sources = [s for s in (spec.dataset.test_data_sources, spec.dataset.val_data_sources) if s is not None]
        sources = sources or list(spec.dataset.train_data_sources or [])
        if not sources:
            raise SpecError(
                f"{path} does not record its classes; give dataset.test_data_sources (or a classmap) so the labels "
                "can be mapped to category ids"
            )
        category_map = category_map_from_sources(spec.dataset, sources[:1])
    model_spec = spec.model
    if isinstance(spec_dict, dict):  # the checkpoint's architecture, with the inference-time keys the spec sets
        chosen = {k: getattr(spec.model, k) for k in INFERENCE_KEYS & spec.model.model_fields_set}
        model_spec = ModelSpec.model_validate({**spec_dict["model"], **chosen})
    model = build_model(model_spec, category_map.num_classes, eval_spatial_size=eval_spatial_size)
    if raw.get("modelopt_state") is not None:  # a checkpoint of rtdetr quantize: quantizers first, then weights
        mto = require("modelopt.torch.opt", extra="quantize", purpose="loading a quantized checkpoint")
        model = mto.restore_from_modelopt_state(model, raw["modelopt_state"])
    report = load_weights(model, raw or path)
    report.source = path
    if not report.complete:
        raise CheckpointError(
            f"{path} does not fit the model ({report.summary()}); check model.* and dataset.num_classes"
        )
    log.info("%s", report.summary())
    quantized = raw.get("modelopt_state") is not None
    return TrainedModel(model.eval(), category_map, model_spec, path, quantized)
