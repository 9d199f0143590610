"""Keys accepted for TAO compatibility that this toolkit cannot honour: the one table of them.

Every other leaf key of every action's schema changes what a job does (``tests/test_spec_effects.py`` checks
each). A key listed here is still validated; set to anything but its default it logs one warning naming it and
the reason, and the schemas mark it ``"x-compatibility-only": true`` with the reason in its description.
"""

from __future__ import annotations

from typing import Any

from .fields import Section
from .model import PRESETS

_TEACHER_REASON = (
    "distill.teacher only describes the frozen teacher's architecture; training, loss, matching and "
    "post-processing settings do not apply to it"
)
_TEACHER_INERT = (
    "train_backbone", "freeze_at", "load_teacher_enc_dec", "num_select", "dropout_ratio", "dn_number",
    "label_noise_ratio", "box_noise_scale", "aux_loss", "vfl_loss_coef", "bbox_loss_coef", "giou_loss_coef",
    "class_cost", "bbox_cost", "giou_cost", "alpha", "gamma", "matcher_alpha", "matcher_gamma", "clip_max_norm",
    "loss_types",
    "backbone_names", "linear_proj_names", "lr_linear_proj_mult", "distillation_loss_coef", "mal_loss_coef",
    "mal_gamma", "mal_alpha",
)  # fmt: skip
_ONE_PROCESS = "runs in one process on train.device; multi-GPU {} is not implemented"
_NO_FROZEN_FM = "the frozen foundation-model (RADIO) branch is not built (frozen_fm.enabled must stay false)"
_NO_TOPK = (
    "top-k checkpointing is not built (checkpointer.enable_topk must stay false): training keeps the periodic "
    "checkpoints and model_best.pth by train.optim.monitor_name"
)
_PRECISE_MSDA = (
    "deformable attention always runs the pure-PyTorch (grid_sample) implementation that TAO's precise_msda "
    "selects, so both values run the same code"
)

COMPATIBILITY_ONLY: dict[str, str] = {
    "encryption_key": "checkpoints and ONNX files are written unencrypted",
    "dataset.dataset_type": "annotations are always held as shared numpy arrays, so both values behave the same",
    "dataset.remap_mscoco_category": "the label <-> category-id mapping follows dataset.num_classes: 80 maps COCO's "
    "91 ids to 80 contiguous labels (and back on output), 91 keeps the ids as labels",
    **{f"evaluate.{k}": _ONE_PROCESS.format("evaluation") for k in ("num_gpus", "gpu_ids", "num_nodes")},
    **{f"inference.{k}": _ONE_PROCESS.format("inference") for k in ("num_gpus", "gpu_ids", "num_nodes")},
    "gen_trt_engine.gpu_id": "the engine is built on the current CUDA device; choose it with CUDA_VISIBLE_DEVICES",
    "gen_trt_engine.input_width": "the input size is fixed in the ONNX file by rtdetr export (export.input_width)",
    "gen_trt_engine.input_height": "the input size is fixed in the ONNX file by rtdetr export (export.input_height)",
    **{f"distill.teacher.{k}": _TEACHER_REASON for k in _TEACHER_INERT},
    **{f"{m}.precise_msda": _PRECISE_MSDA for m in ("model", "distill.teacher")},
    **{f"{m}.frozen_fm.{k}": _NO_FROZEN_FM for m in ("model", "distill.teacher") for k in ("backbone", "checkpoint")},
    **{
        f"train.checkpointer.{k}": _NO_TOPK
        for k in ("replace_periodic", "monitor", "mode", "save_top_k", "filename", "dirpath", "auto_insert_metric_name")
    },
}
"""Dotted key → why it has no effect."""


def compatibility_warnings(spec: Section, source: str) -> list[str]:
    """One warning per compatibility-only key that ``spec`` sets to something other than its default (the value
    is not shown: encryption_key is a credential)."""
    warnings = []
    for key, reason in COMPATIBILITY_ONLY.items():
        value, default = _value_and_default(spec, key)
        if value is not _ABSENT and value != default:
            warnings.append(f"{source}: {key} is set, but it is accepted for TAO compatibility only: {reason}")
    return warnings


_ABSENT = object()


def _value_and_default(spec: Section, dotted: str) -> tuple[Any, Any]:
    """(value at ``dotted`` in ``spec``, its default: the field's, or the model preset's); value is _ABSENT when a
    section on the way is None."""
    *parents, name = dotted.split(".")
    node: Any = spec
    for part in parents:
        node = getattr(node, part)
        if node is None:
            return _ABSENT, None
    default = type(node).model_fields[name].get_default(call_default_factory=True)
    preset = PRESETS.get(getattr(node, "preset", None) or "", {})
    return getattr(node, name), preset.get(name, default)


def mark_schema(properties: dict[str, Any]) -> None:
    """Mark every compatibility-only key in a schema's ``properties`` (in place)."""
    for key, reason in COMPATIBILITY_ONLY.items():
        node: dict[str, Any] = {"properties": properties}
        for part in key.split("."):
            node = node["properties"][part]
        node["x-compatibility-only"] = True
        node["description"] = f"{node.get('description', '')} Compatibility only: {reason}.".strip()
