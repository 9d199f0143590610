"""Shared helpers of the model tests: Hugging Face RT-DETRv2 twins of our presets loaded through our weights loader."""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import Tensor, nn

from rtdetr_tao.model.build import build_model
from rtdetr_tao.model.rtdetr import RTDETR
from rtdetr_tao.model.weights import hf_config, load_weights


@torch.no_grad()
def perturb_(model: nn.Module, seed: int = 0, scale: float = 0.02) -> nn.Module:
    """Make a randomly initialised model well conditioned for comparisons: random BatchNorm statistics and affine
    parameters, noise on every other parameter (so no constant-initialised head ties scores)."""
    gen = torch.Generator().manual_seed(seed)

    def rand(t: Tensor) -> Tensor:
        return torch.rand(t.shape, generator=gen, dtype=t.dtype)

    def randn(t: Tensor) -> Tensor:
        return torch.randn(t.shape, generator=gen, dtype=t.dtype)

    done: set[int] = set()
    for module in model.modules():
        if hasattr(module, "running_var") and module.running_var is not None:
            module.weight.copy_(0.5 + rand(module.weight))
            module.bias.copy_(0.1 * randn(module.bias))
            module.running_mean.copy_(0.1 * randn(module.running_mean))
            module.running_var.copy_(0.5 + rand(module.running_var))
            done.update(id(t) for t in (module.weight, module.bias))
    for param in model.parameters():
        if id(param) not in done:
            param.add_(scale * randn(param))
    return model


def weights_sum(model: nn.Module) -> Tensor:
    """Sum of every floating-point tensor of ``model``'s state dict (float64): identifies seeded weights."""
    return sum(v.double().sum() for v in model.state_dict().values() if v.is_floating_point())


def float64_input(shape: tuple[int, ...], seed: int = 0) -> Tensor:
    """A seeded standard-normal float64 input of ``shape`` (the parity scripts' fixture inputs)."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def load_parity_script(name: str) -> Any:
    """``benchmarks/<name>.py`` as a module (the parity scripts are not part of the package)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def paired_models(
    preset: str,
    num_classes: int = 80,
    eval_size: tuple[int, int] | None = None,
    seed: int = 0,
    input_size: tuple[int, int] | None = None,
    **overrides: Any,
) -> tuple[RTDETR, nn.Module]:
    """(ours, HF) float64 eval-mode twins with the same perturbed random weights. With ``eval_idx`` k, HF has the
    first k + 1 decoder layers and ours keeps its later (unused in eval) layers at their initial values.

    ``input_size`` (H, W): HF precomputes its anchors for it in float32, as ours (and the official reference) always
    do; HF otherwise computes them in the input's dtype, which in float64 can reorder near-tied query scores."""
    from transformers import RTDetrV2ForObjectDetection

    from rtdetr_tao.config.model import ModelSpec

    spec = ModelSpec.model_validate({"preset": preset, **overrides})
    torch.manual_seed(seed)
    config = hf_config(spec, num_classes)
    if input_size is not None:
        config.anchor_image_size = list(input_size)
    hf = perturb_(RTDetrV2ForObjectDetection(config), seed)
    ours = build_model(spec, num_classes, eval_spatial_size=eval_size)
    report = load_weights(ours, hf.state_dict())
    used_layers = spec.dec_layers if spec.eval_idx < 0 else spec.eval_idx + 1
    unused = re.compile(rf"decoder\.(decoder\.layers|dec_score_head|dec_bbox_head)\.([{used_layers}-9]|\d\d)\.")
    if report.skipped or report.unexpected or any(not unused.match(k) for k in report.missing):
        raise AssertionError(f"HF → ours mapping: {report.summary(limit=20)}")
    return ours.double().eval(), hf.double().eval()
