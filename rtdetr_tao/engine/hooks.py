"""Hooks around the training loop: checkpoints, validation, best model and early stopping,
status.json, TensorBoard and progress output. Hooks that write files run on rank 0 only."""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..outputs.progress import format_seconds
from ..outputs.status import StatusLogger
from .checkpoint import BEST, checkpoint_name, point_latest, save_checkpoint
from .ema import unwrap
from .trainer import Hook, epoch_text

log = logging.getLogger(__name__)


class CheckpointHook(Hook):
    """Saves a resumable checkpoint every ``interval`` epochs (or steps), an ``-EMA`` companion with
    the averaged weights, and points ``rtdetr_model_latest.pth`` at the newest."""

    def __init__(self, directory: str | Path, interval: int, unit: str, extra: dict[str, Any]):
        self.directory = Path(directory)
        self.interval = interval
        self.unit = unit
        self.extra = extra  # plain data stored in every checkpoint: spec, category map
        self.saved_step = -1

    def after_step(self) -> None:
        state = self.trainer.state
        if self.unit == "step" and state.global_step % self.interval == 0:
            end_of_epoch = state.step_in_epoch >= state.steps_per_epoch
            self.save(step=None if end_of_epoch else state.global_step)

    def after_epoch(self) -> None:
        state = self.trainer.state
        last = state.epoch == self.trainer.num_epochs - 1
        due = self.unit == "epoch" and (state.epoch + 1) % self.interval == 0
        if (due or last) and self.saved_step != state.global_step:
            self.save(step=None)

    def save(self, step: int | None) -> Path:
        trainer = self.trainer
        epoch = trainer.state.epoch
        path = save_checkpoint(
            self.directory / checkpoint_name(epoch, step),
            {"model": unwrap(trainer.model).state_dict(), **trainer.state_dict(), **self.extra},
        )
        if trainer.ema is not None:
            save_checkpoint(
                self.directory / checkpoint_name(epoch, step, ema=True),
                {"model": trainer.ema.module.state_dict(), "epoch": epoch, "ema_weights": True, **self.extra},
            )
        point_latest(self.directory, path)
        self.saved_step = trainer.state.global_step
        log.info("%s: saved checkpoint %s", epoch_text(trainer.state.epoch, trainer.num_epochs), path)
        return path


class EvalHook(Hook):
    """Validates every ``interval`` epochs (and after the last) and stores the metrics in the state.

    ``evaluate(model) -> {"val_mAP": ..., "val_mAP50": ..., "val_loss": ...}`` runs on every rank.
    """

    def __init__(self, interval: int, evaluate: Callable[[Any], dict[str, float]], *, use_ema: bool = True):
        self.interval = interval
        self.evaluate = evaluate
        self.use_ema = use_ema

    def after_epoch(self) -> None:
        state = self.trainer.state
        if (state.epoch + 1) % self.interval and state.epoch != self.trainer.num_epochs - 1:
            state.metrics = {}
            return
        model = self.trainer.eval_model if self.use_ema else unwrap(self.trainer.model)
        state.metrics = self.evaluate(model)
        metrics = ", ".join(f"{k} {v:.4f}" for k, v in state.metrics.items())
        log.info("%s validation: %s", epoch_text(state.epoch, self.trainer.num_epochs), metrics)


class BestCheckpointHook(Hook):
    """Keeps ``model_best.pth`` (the validated weights with the best ``monitor``) and stops training
    after ``patience`` validations without improvement."""

    def __init__(self, directory: str | Path, monitor: str, extra: dict[str, Any], *, patience: int | None = None):
        self.directory = Path(directory)
        self.monitor = monitor
        self.maximize = "mAP" in monitor
        self.extra = extra
        self.patience = patience
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.bad_rounds = 0

    def after_epoch(self) -> None:
        state = self.trainer.state
        if self.monitor == "train_loss":
            value = state.epoch_losses.get("loss")
        else:
            value = state.metrics.get(self.monitor)
        if value is None or not math.isfinite(value):
            return
        if self.best is None or (value > self.best if self.maximize else value < self.best):
            self.best, self.best_epoch, self.bad_rounds = value, state.epoch, 0
            save_checkpoint(
                self.directory / BEST,
                {
                    "model": self.trainer.eval_model.state_dict(),
                    "epoch": state.epoch,
                    "best": {self.monitor: value},
                    **self.extra,
                },
            )
            when = epoch_text(state.epoch, self.trainer.num_epochs)
            log.info("new best %s %.4f at %s: saved %s", self.monitor, value, when, BEST)
            return
        self.bad_rounds += 1
        if self.patience is not None and self.bad_rounds >= self.patience:
            state.stop_reason = (
                f"early stopping: {self.monitor} has not improved on {self.best:.4f} for {self.bad_rounds} validations"
            )
            log.info(state.stop_reason)


class PlotsHook(Hook):
    """At the end of training, writes ``folder/curves.png`` (val_mAP and losses per epoch, from ``status_file``)
    and the evaluation report of the best checkpoint's validation (the last validation when the best epoch had
    none, e.g. with ``monitor_name: train_loss``). Runs after :class:`BestCheckpointHook` and :class:`StatusHook`.

    ``last_validation()`` returns the newest validation's evaluation (None before the first);
    ``write_report(evaluation, curves)`` writes the report into ``folder``.
    """

    def __init__(
        self,
        folder: str | Path,
        status_file: str | Path,
        best: BestCheckpointHook,
        last_validation: Callable[[], Any],
        write_report: Callable[[Any, Path | None], Any],
    ):
        self.folder, self.status_file = Path(folder), Path(status_file)
        self.best_hook, self.last_validation, self.write_report = best, last_validation, write_report
        self.best: Any = None

    def after_epoch(self) -> None:
        if self.trainer.state.metrics and self.best_hook.best_epoch == self.trainer.state.epoch:
            self.best = self.last_validation()

    def after_train(self) -> None:
        from ..outputs.report import plot_training_curves

        self.folder.mkdir(parents=True, exist_ok=True)
        curves = plot_training_curves(self.status_file, self.folder / "curves.png")
        evaluation = self.best or self.last_validation()
        if evaluation is not None:
            self.write_report(evaluation, curves)
        log.info("training plots in %s", self.folder)


class TensorBoardHook(Hook):
    """Losses and learning rate every ``every`` steps, validation metrics every validation."""

    def __init__(self, log_dir: str | Path, every: int = 10):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(log_dir))
        self.every = every

    def after_step(self) -> None:
        state = self.trainer.state
        if state.global_step % self.every == 0:
            for key, value in state.losses.items():
                self.writer.add_scalar(f"train/{key}", value, state.global_step)
            self.writer.add_scalar("train/lr", state.lr, state.global_step)

    def after_epoch(self) -> None:
        state = self.trainer.state
        for key, value in state.metrics.items():
            self.writer.add_scalar(f"val/{key}", value, state.epoch)
        self.writer.flush()

    def after_train(self) -> None:
        self.writer.close()

    def on_failure(self, error: BaseException) -> None:
        self.writer.close()


class ProgressHook(Hook):
    """A progress bar with loss, lr and ETA on a terminal; a log line every ``every`` steps otherwise."""

    def __init__(self, every: int = 20, *, tty: bool | None = None):
        self.every = every
        self.tty = sys.stderr.isatty() if tty is None else tty
        self.bar = None

    def before_epoch(self) -> None:
        state = self.trainer.state
        if self.tty:
            from tqdm import tqdm

            self.bar = tqdm(
                total=state.steps_per_epoch,
                initial=state.step_in_epoch,
                dynamic_ncols=True,
                leave=True,
                desc=f"epoch {state.epoch + 1}/{self.trainer.num_epochs}",
            )

    def after_step(self) -> None:
        state = self.trainer.state
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{state.losses['loss']:.3f}", lr=f"{state.lr:.2e}", refresh=False)
            self.bar.update(1)
        elif state.step_in_epoch % self.every == 0 or state.step_in_epoch == state.steps_per_epoch:
            log.info(
                "epoch %d/%d step %d/%d loss %.4f lr %.2e eta %s",
                state.epoch + 1,
                self.trainer.num_epochs,
                state.step_in_epoch,
                state.steps_per_epoch,
                state.losses["loss"],
                state.lr,
                format_seconds(eta_seconds(self.trainer)),
            )

    def after_epoch(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def on_failure(self, error: BaseException) -> None:
        self.after_epoch()


def eta_seconds(trainer: Any) -> float:
    """Seconds left in the run, from this epoch's pace."""
    state = trainer.state
    if state.epoch_steps_run == 0:
        return float("nan")
    per_step = (time.time() - state.epoch_start_time) / state.epoch_steps_run
    left = (trainer.num_epochs - state.epoch) * state.steps_per_epoch - state.step_in_epoch
    return per_step * left


class StatusHook(Hook):
    """One RUNNING record per epoch in status.json: losses, lr, validation kpi, timing. (The job itself
    records STARTED, and SUCCESS or FAILURE.)"""

    def __init__(self, status: StatusLogger):
        self.status = status

    def after_epoch(self) -> None:
        state = self.trainer.state
        elapsed = time.time() - state.epoch_start_time
        self.status.log(
            "RUNNING",
            f"{epoch_text(state.epoch, self.trainer.num_epochs).capitalize()} finished.",
            epoch=state.epoch,
            max_epoch=self.trainer.num_epochs,
            step=state.global_step,
            max_step=self.trainer.num_epochs * state.steps_per_epoch,
            time_per_epoch=round(elapsed, 3),
            eta=round(elapsed * (self.trainer.num_epochs - state.epoch - 1), 3),
            losses=state.epoch_losses,
            lr=state.lr,
            kpi=state.metrics or None,
        )
