"""Optimizer parameter groups and the learning-rate schedule.

Groups (as in the reference recipe): backbone parameters train at the backbone learning rate,
``linear_proj_names`` parameters at ``lr * lr_linear_proj_mult``, everything else at ``lr``; norm
weights and biases (every parameter with fewer than two dimensions) get no weight decay.

The schedule is a pure function of (epoch, global step): MultiStep or StepLR decay per epoch,
times a linear warm-up over the first ``warmup_steps`` optimizer steps; or DEIM's FlatCosine per step
(quadratic warm-up, flat, cosine down to ``min_factor``, flat at the floor for the last ``no_aug_epochs``).
Being stateless, it resumes exactly.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn


def freeze_modules(model: nn.Module, prefixes: Sequence[str]) -> list[str]:
    """Set ``requires_grad=False`` on parameters under the given module-name prefixes; returns unknown prefixes."""
    names = [n for n, _ in model.named_parameters()]
    unknown = [p for p in prefixes if not any(n == p or n.startswith(p + ".") for n in names)]
    for name, param in model.named_parameters():
        if any(name == p or name.startswith(p + ".") for p in prefixes):
            param.requires_grad_(False)
    return unknown


def param_groups(
    model: nn.Module,
    *,
    lr: float,
    lr_backbone: float,
    weight_decay: float,
    backbone_names: Sequence[str] = ("backbone",),
    linear_proj_names: Sequence[str] = (),
    linear_proj_mult: float = 1.0,
) -> list[dict]:
    """Trainable parameters split into optimizer groups (each with ``lr``, ``weight_decay``, ``name``)."""
    groups: dict[tuple[str, bool], dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if any(name == b or name.startswith(b + ".") for b in backbone_names):
            kind, group_lr = "backbone", lr_backbone
        elif any(part in name for part in linear_proj_names) and linear_proj_mult != 1.0:
            kind, group_lr = "linear_proj", lr * linear_proj_mult
        else:
            kind, group_lr = "detector", lr
        no_decay = param.ndim < 2
        key = (kind, no_decay)
        if key not in groups:
            groups[key] = {
                "name": f"{kind}{'_no_decay' if no_decay else ''}",
                "params": [],
                "lr": group_lr,
                "weight_decay": 0.0 if no_decay else weight_decay,
            }
        groups[key]["params"].append(param)
    return list(groups.values())


def loss_groups(loss: object, *, lr: float, weight_decay: float) -> list[dict]:
    """A loss that learns (an ``nn.Module`` with trainable parameters, e.g. distillation projections) as one
    ``loss`` group at ``lr``; no group for a plain loss function."""
    if not isinstance(loss, nn.Module):
        return []
    trainable = [p for p in loss.parameters() if p.requires_grad]
    return [{"name": "loss", "params": trainable, "lr": lr, "weight_decay": weight_decay}] if trainable else []


def build_optimizer(name: str, groups: list[dict], *, lr: float, momentum: float) -> torch.optim.Optimizer:
    """AdamW (betas (momentum, 0.999), as the reference) or SGD with momentum."""
    if name == "AdamW":
        return torch.optim.AdamW(groups, lr=lr, betas=(momentum, 0.999))
    if name == "SGD":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum)
    raise ValueError(f"unknown optimizer {name}")


@dataclass(frozen=True)
class LRSchedule:
    """Learning-rate factor for (epoch, global_step): decay x warm-up."""

    kind: str  # "MultiStep", "StepLR" or "FlatCosine"
    milestones: tuple[int, ...] = ()
    step_size: int = 1
    decay: float = 0.1
    warmup_steps: int = 0
    steps_per_epoch: int = 1  # FlatCosine's fields from here
    num_epochs: int = 1
    flat_epochs: int = 0
    no_aug_epochs: int = 0
    min_factor: float = 0.5

    def factor(self, epoch: int, global_step: int) -> float:
        if self.kind == "FlatCosine":
            return self._flat_cosine(global_step)
        if self.kind == "MultiStep":
            decays = bisect.bisect_right(self.milestones, epoch)
        else:
            decays = epoch // self.step_size
        warmup = min(1.0, (global_step + 1) / self.warmup_steps) if self.warmup_steps > 0 else 1.0
        return self.decay**decays * warmup

    def _flat_cosine(self, step: int) -> float:
        """DEIM's ``flat_cosine_schedule`` as a factor of the base lr (its min_lr is base lr x lr_gamma)."""
        total = self.steps_per_epoch * self.num_epochs
        flat = self.steps_per_epoch * self.flat_epochs
        no_aug = self.steps_per_epoch * self.no_aug_epochs
        if self.warmup_steps > 0 and step <= self.warmup_steps:
            return (step / self.warmup_steps) ** 2
        if step <= flat:
            return 1.0
        if step >= total - no_aug:
            return self.min_factor
        cosine = 0.5 * (1 + math.cos(math.pi * (step - flat) / (total - flat - no_aug)))
        return self.min_factor + (1.0 - self.min_factor) * cosine

    def apply(self, optimizer: torch.optim.Optimizer, epoch: int, global_step: int) -> float:
        """Set every group's lr to its base lr times the factor; returns the factor."""
        factor = self.factor(epoch, global_step)
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
            group["lr"] = group["initial_lr"] * factor
        return factor
