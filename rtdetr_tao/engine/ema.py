"""Exponential moving average of the model weights, with the reference's decay warm-up."""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn

from .distributed import unwrap


class ModelEMA:
    """``ema = d * ema + (1 - d) * model`` with ``d = decay * (1 - exp(-updates / warmup_steps))``.

    Floating-point parameters and buffers are averaged; integer buffers are copied.
    """

    def __init__(self, model: nn.Module, decay: float, warmup_steps: int = 2000, *, device: str | None = None):
        self.module = copy.deepcopy(unwrap(model)).eval()
        self.device = device  # None: the model's device
        if device is not None:
            self.module.to(device)
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay = decay
        self.warmup_steps = warmup_steps
        self.updates = 0

    def current_decay(self) -> float:
        if self.warmup_steps <= 0:
            return self.decay
        return self.decay * (1 - math.exp(-self.updates / self.warmup_steps))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.current_decay()
        source = unwrap(model).state_dict()
        for name, ema_value in self.module.state_dict().items():
            value = source[name].detach().to(ema_value.device)
            if ema_value.dtype.is_floating_point:
                ema_value.mul_(d).add_(value, alpha=1 - d)
            else:
                ema_value.copy_(value)

    def state_dict(self) -> dict[str, Any]:
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])
