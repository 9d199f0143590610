"""The training loop, with Detectron2-style hooks.

The loop owns only the optimization step (forward, loss, backward, clipping, optimizer, EMA,
learning rate). Everything around it — checkpoints, validation, status.json, TensorBoard, progress,
early stopping — is a :class:`Hook` reacting to ``before_train / before_epoch / after_step /
after_epoch / after_train / on_failure``.

Reproducibility: the random state at every optimizer step is seeded from (seed, rank, global step),
and the data loader's order and augmentation are functions of (seed, epoch, batch index), so a run
resumed from a checkpoint — even one written mid-epoch — continues exactly as the uninterrupted run.

Epoch numbering: ``state.epoch`` is 0-based, and so are the files and records others read (TAO's
``model_epoch_000.pth`` is the first epoch; status.json ``epoch``). Log and status messages count as people do,
``epoch 1/20`` .. ``epoch 20/20`` (:func:`epoch_text`); a message about a checkpoint names its file.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from ..errors import TrainingError
from .distributed import all_reduce_mean, unwrap
from .ema import ModelEMA
from .optim import LRSchedule

log = logging.getLogger(__name__)


def epoch_text(epoch: int, num_epochs: int) -> str:
    """The 0-based ``epoch`` as logs show it: ``epoch 1/20`` for the first of 20."""
    return f"epoch {epoch + 1}/{num_epochs}"


Autocast = Callable[[], AbstractContextManager[Any]]
LossFn = Callable[[nn.Module, torch.Tensor, list[dict[str, torch.Tensor]], Autocast], dict[str, torch.Tensor]]
"""(model, images [B,3,H,W], targets, autocast) -> named, weighted losses whose sum is minimized.

``autocast()`` is the mixed-precision context for the forward pass; losses are computed outside it
(in fp32), as the reference does."""


class EpochLoader(Protocol):
    """A data loader whose order and augmentation are set per epoch (and starting batch)."""

    def __iter__(self): ...
    def __len__(self) -> int: ...
    def set_epoch(self, epoch: int, start_batch: int = 0) -> None: ...


class Hook:
    """Reacts to the loop's events; ``self.trainer`` is set when the hook is registered.

    A hook with state that must survive a resume returns it from ``state_dict`` (plain data) and
    takes it back in ``load_state_dict``; the trainer checkpoints it under the hook's class name."""

    trainer: Trainer

    def before_train(self) -> None: ...
    def before_epoch(self) -> None: ...
    def after_step(self) -> None: ...
    def after_epoch(self) -> None: ...
    def after_train(self) -> None: ...
    def on_failure(self, error: BaseException) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        return None


@dataclass
class TrainState:
    """Where the loop is; hooks read it, and checkpoints store it."""

    epoch: int = 0
    global_step: int = 0
    step_in_epoch: int = 0
    steps_per_epoch: int = 0
    losses: dict[str, float] = field(default_factory=dict)
    epoch_losses: dict[str, float] = field(default_factory=dict)
    epoch_steps_run: int = 0
    lr: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)
    stop_reason: str | None = None
    epoch_start_time: float = 0.0
    train_start_time: float = 0.0


class Trainer:
    """Runs epochs ``start_epoch .. num_epochs - 1`` of ``loss_fn`` over ``loader``."""

    def __init__(
        self,
        *,
        model: nn.Module,
        loss_fn: LossFn,
        optimizer: torch.optim.Optimizer,
        schedule: LRSchedule,
        loader: EpochLoader,
        device: torch.device,
        num_epochs: int,
        seed: int,
        rank: int = 0,
        precision: str = "fp32",
        clip_grad_norm: float = 0.0,
        ema: ModelEMA | None = None,
        ema_every: int = 1,
        hooks: Sequence[Hook] = (),
    ):
        self.model = model
        self.loss_fn = loss_fn
        self.optimizer = optimizer
        self.schedule = schedule
        self.loader = loader
        self.device = device
        self.num_epochs = num_epochs
        self.seed = seed
        self.rank = rank
        self.clip_grad_norm = clip_grad_norm
        self.precision = precision
        self.ema = ema
        self.ema_every = ema_every
        self.autocast_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)
        if device.type != "cuda":
            self.autocast_dtype = None  # mixed precision is a GPU feature; the CPU trains in fp32
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.autocast_dtype is torch.float16)
        self.state = TrainState()
        self.hooks: list[Hook] = []
        for hook in hooks:
            self.register(hook)

    def register(self, hook: Hook) -> None:
        name = type(hook).__name__
        if any(type(h).__name__ == name for h in self.hooks):
            raise ValueError(f"a {name} is already registered (hook state is checkpointed by class name)")
        hook.trainer = self
        self.hooks.append(hook)

    # --- resume ------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs besides the model weights."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "loss": self.loss_fn.state_dict() if isinstance(self.loss_fn, torch.nn.Module) else None,
            "epoch": self.state.epoch,
            "global_step": self.state.global_step,
            "step_in_epoch": self.state.step_in_epoch,
            "epoch_complete": self.state.step_in_epoch >= self.state.steps_per_epoch,
            "seed": self.seed,
            "hooks": {type(h).__name__: h.state_dict() for h in self.hooks if h.state_dict()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from a checkpoint written by :meth:`state_dict` (model weights loaded separately)."""
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])
        if isinstance(self.loss_fn, torch.nn.Module) and state.get("loss") is not None:
            self.loss_fn.load_state_dict(state["loss"])  # trainable parts of a loss (distillation projections)
        saved_hooks = state.get("hooks", {})
        for hook in self.hooks:
            if type(hook).__name__ in saved_hooks:
                hook.load_state_dict(saved_hooks[type(hook).__name__])
        self.state.global_step = int(state["global_step"])
        if state["epoch_complete"]:
            self.state.epoch, self.state.step_in_epoch = int(state["epoch"]) + 1, 0
        else:
            self.state.epoch, self.state.step_in_epoch = int(state["epoch"]), int(state["step_in_epoch"])

    # --- the loop ----------------------------------------------------------------------------

    def train(self) -> TrainState:
        state = self.state
        state.steps_per_epoch = len(self.loader)
        state.train_start_time = time.time()
        try:
            self._call("before_train")
            while state.epoch < self.num_epochs and state.stop_reason is None:
                self.loader.set_epoch(state.epoch, start_batch=state.step_in_epoch)
                state.epoch_start_time = time.time()
                state.epoch_losses, state.epoch_steps_run = {}, 0
                self._call("before_epoch")
                self.model.train()
                for images, targets in self.loader:
                    self.run_step(images, targets)
                    state.step_in_epoch += 1
                    state.global_step += 1
                    self._call("after_step")
                # one train loss for every rank, so hooks that read it decide alike
                state.epoch_losses = all_reduce_mean(state.epoch_losses, self.device)
                self._call("after_epoch")
                state.epoch += 1
                state.step_in_epoch = 0
            self._call("after_train")
        except BaseException as error:
            for hook in self.hooks:
                hook.on_failure(error)
            raise
        return state

    def run_step(self, images: torch.Tensor, targets: list[dict[str, torch.Tensor]]) -> None:
        state = self.state
        seed_everything(step_seed(self.seed, self.rank, state.global_step))
        images = images.to(self.device, non_blocking=True)
        targets = [
            {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in t.items()}
            for t in targets
        ]
        self.schedule.apply(self.optimizer, state.epoch, state.global_step)
        state.lr = max(group["lr"] for group in self.optimizer.param_groups)
        losses = self.loss_fn(self.model, images, targets, self.autocast)
        total = sum(losses.values())
        if not torch.isfinite(total):
            raise TrainingError(
                f"loss is {total.item()} at {epoch_text(state.epoch, self.num_epochs)}, step {state.global_step} "
                f"({ {k: round(float(v.detach()), 4) for k, v in losses.items()} }); lower train.optim.lr or enable "
                "train.clip_grad_norm"
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        if self.clip_grad_norm > 0:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.ema is not None and (state.global_step + 1) % self.ema_every == 0:
            self.ema.update(self.model)
        state.losses = {"loss": float(total.detach()), **{k: float(v.detach()) for k, v in losses.items()}}
        state.epoch_steps_run += 1
        for key, value in state.losses.items():  # running mean over this epoch's steps
            previous = state.epoch_losses.get(key, 0.0)
            state.epoch_losses[key] = previous + (value - previous) / state.epoch_steps_run

    def autocast(self) -> AbstractContextManager[Any]:
        """The forward pass's mixed-precision context (a no-op in fp32)."""
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def _call(self, event: str) -> None:
        for hook in self.hooks:
            getattr(hook, event)()

    @property
    def eval_model(self) -> nn.Module:
        """The weights to validate: the EMA copy when there is one."""
        return self.ema.module if self.ema is not None else unwrap(self.model)


def step_seed(seed: int, rank: int, global_step: int) -> int:
    """The seed of one optimizer step on one rank."""
    return (seed * 1_000_003 + rank * 7_919 + global_step) % (2**63 - 1)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
