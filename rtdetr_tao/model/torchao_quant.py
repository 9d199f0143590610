"""INT8 quantization of the ``Linear`` layers with PyTorch's ``torchao`` (``quantize.backend: torchao``).

Two schemes, both without calibration data and both running on the CPU:

- ``int8_weight_only``: int8 weights (one scale per output channel), float activations;
- ``int8_dynamic``: int8 weights, and activations quantized to int8 per row at run time.

torchao replaces each chosen layer's ``weight`` with an int8 tensor subclass that carries its scales, so the
quantized state dict is about a quarter of the float one, saves with ``torch.save`` and loads with
``torch.load(weights_only=True)`` once ``torchao`` is imported. Convolutions stay in float.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..errors import SpecError, require

SCHEMES = ("int8_weight_only", "int8_dynamic")


def _torchao(purpose: str) -> Any:
    return require("torchao.quantization", extra="torchao", purpose=purpose, package="torchao")


def torchao_schemes(model: nn.Module, dtypes: Mapping[str, tuple[str, str]]) -> tuple[dict[str, str], list[str]]:
    """The torchao scheme of every module of ``dtypes`` (qualified name → (weight dtype, activation dtype)).

    Returns (Linear name → scheme, names left in float: the non-Linear modules, and the ``out_proj`` of
    ``nn.MultiheadAttention``, which ``F.multi_head_attention_forward`` uses through a transpose that torchao's
    int8 tensors do not implement). Raises :class:`SpecError` for dtypes torchao's CPU schemes cannot give (fp8,
    int8 activations on float weights).
    """
    modules = dict(model.named_modules())
    attention_out = {f"{name}.out_proj" for name, m in modules.items() if isinstance(m, nn.MultiheadAttention)}
    schemes: dict[str, str] = {}
    left: list[str] = []
    for name, (weights, activations) in dtypes.items():
        if not isinstance(modules[name], nn.Linear) or name in attention_out:
            left.append(name)
            continue
        if weights != "int8" or activations not in ("int8", "native"):
            raise SpecError(
                f"quantize.backend=torchao quantizes Linear weights to int8 (activations int8 or native), but the "
                f"rules give {name} weights {weights} / activations {activations}; change quantize.layers or use "
                "quantize.backend=modelopt"
            )
        schemes[name] = "int8_dynamic" if activations == "int8" else "int8_weight_only"
    return schemes, left


def quantize_linear(model: nn.Module, schemes: Mapping[str, str]) -> nn.Module:
    """Quantize, in place, the ``Linear`` modules named in ``schemes`` (name → one of :data:`SCHEMES`)."""
    ao = _torchao("quantize.backend=torchao")
    configs = {
        "int8_weight_only": ao.Int8WeightOnlyConfig,
        "int8_dynamic": ao.Int8DynamicActivationInt8WeightConfig,
    }
    for scheme in SCHEMES:
        names = {name for name, chosen in schemes.items() if chosen == scheme}
        if names:
            ao.quantize_(model, configs[scheme](), filter_fn=lambda _, fqn, names=names: fqn in names)
    return model


def is_torchao_tensor(value: Any) -> bool:
    """Whether ``value`` is one of torchao's quantized tensor subclasses."""
    return isinstance(value, torch.Tensor) and type(value).__module__.startswith("torchao.")


def quantized_layers(model: nn.Module) -> list[str]:
    """Qualified names of the modules whose weight is a torchao quantized tensor."""
    return [name for name, m in model.named_modules() if is_torchao_tensor(getattr(m, "weight", None))]


def serialized_bytes(state: Mapping[str, Any]) -> int:
    """Bytes that ``torch.save`` writes for ``state`` (a state dict): the size of the weights on disk."""
    buffer = io.BytesIO()
    torch.save(dict(state), buffer)
    return buffer.tell()


def load_quantized_state(model: nn.Module, state: Mapping[str, Any]) -> None:
    """Load a torchao-quantized state dict into a float ``model`` built with the same architecture: the int8
    tensors replace the float weights (``assign``), so the model computes with them as quantized."""
    _torchao("loading a checkpoint quantized with quantize.backend=torchao")
    model.load_state_dict(dict(state), strict=True, assign=True)
