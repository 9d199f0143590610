"""Quantization planning: which ``Conv2d`` / ``Linear`` modules get which weight and activation dtypes.

:func:`plan_layers` is the one translation of the ``quantize`` spec's rules into plain per-module plans (as
:mod:`rtdetr_tao.model.build` is for the model spec): a rule matches the module's qualified name or class name
with fnmatch, later rules win, ``skip_names`` keep modules in float. :func:`modelopt_config` turns the plans into
NVIDIA ModelOpt's ``mtq.quantize`` config; :mod:`rtdetr_tao.model.torchao_quant` takes them for torchao.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any

from torch import nn

from ..config.quantize import QuantizeSpec
from ..errors import SpecError

QUANTIZABLE = (nn.Conv2d, nn.Linear)
_FORMATS: dict[str, dict[str, Any]] = {
    "int8": {"num_bits": 8},
    "fp8_e4m3fn": {"num_bits": (4, 3)},
    "fp8_e5m2": {"num_bits": (5, 2)},
}


@dataclass(frozen=True)
class LayerPlan:
    """The dtypes one module gets (``native``: left in float)."""

    weights: str
    activations: str
    weight_axis: int | None
    activation_axis: int | None


def plan_layers(model: nn.Module, cfg: QuantizeSpec) -> dict[str, LayerPlan]:
    """Qualified name → dtypes for every Conv2d / Linear module of ``model``, as the spec's rules say."""

    def matches(pattern: str, name: str, module: nn.Module) -> bool:
        return fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(type(module).__name__, pattern)

    plans: dict[str, LayerPlan] = {}
    for name, module in model.named_modules():
        if not isinstance(module, QUANTIZABLE) or any(matches(p, name, module) for p in cfg.skip_names):
            continue
        weights, activations = cfg.default_layer_dtype, cfg.default_activation_dtype
        weight_axis: int | None = 0
        activation_axis: int | None = None
        for rule in cfg.layers:
            if not matches(rule.module_name, name, module):
                continue
            if rule.weights is not None:
                weights, weight_axis = rule.weights.dtype, rule.weights.quant_axis
                weight_axis = 0 if weight_axis is None and weights == "int8" else weight_axis
            if rule.activations is not None:
                activations, activation_axis = rule.activations.dtype, rule.activations.quant_axis
        if cfg.mode == "weight_only_ptq":
            activations = "native"
        if weights != "native" or activations != "native":
            plans[name] = LayerPlan(weights, activations, weight_axis, activation_axis)
    if not plans:
        raise SpecError(
            "quantize.layers, skip_names and the default dtypes leave every layer in float; add a rule such as "
            "{module_name: '*', weights: {dtype: int8}, activations: {dtype: int8}}"
        )
    return plans


def modelopt_config(plans: dict[str, LayerPlan], cfg: QuantizeSpec) -> dict[str, Any]:
    """The ``mtq.quantize`` config: every quantizer off, then one entry per planned weight / input quantizer."""
    quant_cfg: dict[str, Any] = {"*": {"enable": False}}
    for name, plan in plans.items():
        if plan.weights != "native":
            quant_cfg[f"{name}.weight_quantizer"] = {**_FORMATS[plan.weights], "axis": plan.weight_axis}
        if plan.activations != "native":
            quant_cfg[f"{name}.input_quantizer"] = {**_FORMATS[plan.activations], "axis": plan.activation_axis}
    algorithm: Any = cfg.algorithm
    if cfg.algorithm == "percentile":
        algorithm = {"method": "max"}  # ModelOpt calibrates percentiles through its histogram calibrator
        for entry in quant_cfg.values():
            if "num_bits" in entry and entry.get("axis") is None:
                entry["calibrator"] = ("histogram", (), {"method": "percentile", "percentile": cfg.percentile})
    elif cfg.algorithm in ("entropy", "mse"):
        algorithm = {"method": "max"}
        for entry in quant_cfg.values():
            if "num_bits" in entry and entry.get("axis") is None:
                entry["calibrator"] = ("histogram", (), {"method": cfg.algorithm})
    return {"quant_cfg": quant_cfg, "algorithm": algorithm, **cfg.backend_kwargs}
