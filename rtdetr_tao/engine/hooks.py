"""Hooks around the training loop: checkpoints, validation, best model and early stopping,
status.json, TensorBoard and progress output. Hooks that write files run on rank 0 only; early
stopping runs on every rank and decides the same on all of them (it reads rank 0's validation
metrics, broadcast, or the train loss averaged over the ranks).

A hook that carries state between epochs (the best value so far, the validations without
improvement) returns it from ``state_dict``; the trainer stores it in every checkpoint and hands it
back to ``load_state_dict`` on resume."""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..config.train import Goal
from ..errors import SpecError, require
from ..outputs.status import StatusLogger
from ..progress import format_seconds
from .checkpoint import BEST, checkpoint_name, point_latest, save_checkpoint
from .distributed import unwrap
from .trainer import Hook, TrainState, epoch_text

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
        end_of_epoch = state.step_in_epoch >= state.steps_per_epoch
        if self.unit == "step" and state.global_step % self.interval == 0 and not end_of_epoch:
            self.save(step=state.global_step)

    def after_epoch(self) -> None:
        # Registered after validation, best-model and early stopping, so that the end-of-epoch
        # checkpoint holds this epoch's hook state.
        state = self.trainer.state
        last = state.epoch == self.trainer.num_epochs - 1 or state.stop_reason is not None
        if self.unit == "epoch":
            due = (state.epoch + 1) % self.interval == 0
        else:
            due = state.global_step % self.interval == 0
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


def monitored_value(state: TrainState, monitor: str) -> float | None:
    """This epoch's value of ``monitor`` (None when the epoch did not produce a finite one)."""
    value = state.epoch_losses.get("loss") if monitor == "train_loss" else state.metrics.get(monitor)
    return value if value is not None and math.isfinite(value) else None


def improves(value: float, best: float | None, goal: Goal) -> bool:
    """Whether ``value`` beats ``best`` in the direction ``goal`` (anything beats None)."""
    return best is None or (value > best if goal == "maximize" else value < best)


class EarlyStoppingHook(Hook):
    """Stops training after ``patience`` validations without improvement of ``monitor``.

    Runs on every rank: the value it reads is the same on all of them, so all stop at the same epoch."""

    def __init__(self, monitor: str, goal: Goal, patience: int):
        self.monitor = monitor
        self.goal = goal
        self.patience = patience
        self.best: float | None = None
        self.bad_rounds = 0

    def after_epoch(self) -> None:
        state = self.trainer.state
        value = monitored_value(state, self.monitor)
        if value is None:
            return
        if improves(value, self.best, self.goal):
            self.best, self.bad_rounds = value, 0
            return
        self.bad_rounds += 1
        if self.bad_rounds >= self.patience:
            state.stop_reason = (
                f"early stopping: {self.monitor} has not improved on {self.best:.4f} for {self.bad_rounds} validations"
            )
            log.info(state.stop_reason)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "bad_rounds": self.bad_rounds}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.best, self.bad_rounds = state["best"], int(state["bad_rounds"])


class BestCheckpointHook(Hook):
    """Keeps ``model_best.pth``: the validated weights with the best ``monitor`` so far (rank 0)."""

    def __init__(self, directory: str | Path, monitor: str, goal: Goal, extra: dict[str, Any]):
        self.directory = Path(directory)
        self.monitor = monitor
        self.goal = goal
        self.extra = extra
        self.best: float | None = None
        self.best_epoch: int | None = None

    def after_epoch(self) -> None:
        state = self.trainer.state
        value = monitored_value(state, self.monitor)
        if value is None or not improves(value, self.best, self.goal):
            return
        self.best, self.best_epoch = value, state.epoch
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

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.best, self.best_epoch = state["best"], state.get("best_epoch")


class PlotsHook(Hook):
    """At the end of training, writes ``folder/curves.png`` (val_mAP and losses per epoch, from ``status_file``)
    and the evaluation report of the best checkpoint's validation (the last validation when the best epoch had
    none, e.g. with ``monitor_name: train_loss``). Runs after :class:`BestCheckpointHook` and :class:`StatusHook`.

    ``last_validation()`` returns the newest validation's evaluation (None before the first);
    ``write_report(evaluation, curves, best_epoch)`` writes the report into ``folder`` (``best_epoch`` None: the
    evaluation is the last validation, e.g. after a resume past the best epoch).
    """

    def __init__(
        self,
        folder: str | Path,
        status_file: str | Path,
        best: BestCheckpointHook,
        last_validation: Callable[[], Any],
        write_report: Callable[[Any, Path | None, int | None], Any],
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
            self.write_report(evaluation, curves, self.best_hook.best_epoch if self.best is not None else None)
        log.info("training plots in %s", self.folder)


class TensorBoardHook(Hook):
    """Losses and learning rate every ``every`` steps, validation metrics every validation."""

    def __init__(self, log_dir: str | Path, every: int = 10):
        self.log_dir = Path(log_dir)
        self.every = every
        self.writer: Any = None

    def before_train(self) -> None:
        # made here, not in __init__, so that a W&B run started before it can mirror it (wandb.sync_tensorboard)
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(self.log_dir))

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
        if self.writer is not None:
            self.writer.close()


class WandBHook(Hook):
    """A Weights & Biases run (rank 0): train losses and lr every ``every`` steps and at the end of each epoch,
    the epoch's mean losses and the validation metrics after each epoch, all at the global step.

    ``init_kwargs`` go to ``wandb.init`` (project, entity, group, tags, name, config, dir, save_code, reinit,
    sync_tensorboard, id). The run id is hook state: a resumed job continues the same run. With
    ``sync_tensorboard`` the run mirrors the TensorBoard events instead of logging the scalars twice."""

    def __init__(self, init_kwargs: dict[str, Any], *, every: int = 10):
        self.init_kwargs = init_kwargs
        self.every = every
        self.run_id: str | None = init_kwargs.get("id")
        self.run: Any = None

    def before_train(self) -> None:
        wandb = require("wandb", extra="wandb", purpose="wandb.enable=true")
        self.run = wandb.init(**{**self.init_kwargs, "id": self.run_id, "resume": "allow"})
        self.run_id = self.run.id
        log.info("W&B run %s (%s)", self.run.id, self.run.dir)

    @property
    def logs_scalars(self) -> bool:
        return not self.init_kwargs.get("sync_tensorboard")

    def after_step(self) -> None:
        state = self.trainer.state
        end_of_epoch = state.step_in_epoch >= state.steps_per_epoch
        if self.logs_scalars and (state.global_step % self.every == 0 or end_of_epoch):
            scalars = {f"train/{key}": value for key, value in state.losses.items()}
            self.run.log({**scalars, "train/lr": state.lr}, step=state.global_step)

    def after_epoch(self) -> None:
        state = self.trainer.state
        if self.logs_scalars:
            scalars = {f"epoch/{key}": value for key, value in state.epoch_losses.items()}
            scalars.update({f"val/{key}": value for key, value in state.metrics.items()})
            self.run.log({**scalars, "epoch": state.epoch}, step=state.global_step)

    def after_train(self) -> None:
        self.run.finish()

    def on_failure(self, error: BaseException) -> None:
        if self.run is not None:
            self.run.finish(exit_code=1)

    def state_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id} if self.run_id else {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if self.init_kwargs.get("id") is None:  # wandb.run_id, when set, names the run
            self.run_id = state["run_id"]


class ClearMLHook(Hook):
    """A ClearML task (rank 0): train losses and lr every ``every`` steps and at the end of each epoch, the epoch's
    mean losses and the validation metrics after each epoch, at the global step. ``init_kwargs`` go to
    ``Task.init``; the task id is hook state, so a resumed job continues its own task."""

    def __init__(self, init_kwargs: dict[str, Any], *, every: int = 10):
        self.init_kwargs = init_kwargs
        self.every = every
        self.task_id: str | None = None
        self.task: Any = None

    def before_train(self) -> None:
        clearml = require("clearml", extra="clearml", purpose="clearml.enable=true")
        kwargs = dict(self.init_kwargs)
        if self.task_id is not None:
            kwargs["continue_last_task"] = self.task_id
        if os.environ.get("CLEARML_OFFLINE_MODE", "").lower() in ("1", "true", "yes"):
            clearml.Task.set_offline(offline_mode=True)
        # ClearML's default on Linux (sdk.development.report_use_subprocess) os.fork()s its reporter out of this
        # process, which already runs torch's, tqdm's and the loaders' threads: the child can deadlock on a lock
        # held by a thread it did not inherit, and training then hangs in Task.init or Task.close. Threads instead.
        clearml.Task._report_subprocess_enabled = False
        try:
            self.task = clearml.Task.init(**kwargs, auto_connect_frameworks=False, auto_connect_streams=False)
        except Exception as exc:
            if type(exc).__name__ != "MissingConfigError":
                raise
            raise SpecError(
                "clearml.enable=true but ClearML is not configured on this machine: run clearml-init (or set "
                "CLEARML_API_* variables), or log offline with CLEARML_OFFLINE_MODE=1"
            ) from None
        self.task_id = self.task.id
        log.info("ClearML task %s", self.task.id)

    def _report(self, title: str, values: Mapping[str, float], step: int) -> None:
        logger = self.task.get_logger()
        for key, value in values.items():
            logger.report_scalar(title, key, value, iteration=step)

    def after_step(self) -> None:
        state = self.trainer.state
        if state.global_step % self.every == 0 or state.step_in_epoch >= state.steps_per_epoch:
            self._report("train", {**state.losses, "lr": state.lr}, state.global_step)

    def after_epoch(self) -> None:
        state = self.trainer.state
        self._report("epoch", state.epoch_losses, state.global_step)
        self._report("val", state.metrics, state.global_step)

    def after_train(self) -> None:
        self.task.close()

    def on_failure(self, error: BaseException) -> None:
        if self.task is not None:
            self.task.mark_failed(status_reason=str(error)[:200])
            self.task.close()

    def state_dict(self) -> dict[str, Any]:
        return {"task_id": self.task_id} if self.task_id else {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.task_id = state["task_id"]


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


def training_hooks(
    *,
    out_dir: Path,
    status: StatusLogger,
    is_main: bool,
    monitor: str,
    goal: Goal,
    checkpoint_extra: dict[str, Any],
    checkpoint_interval: int,
    checkpoint_unit: str,
    validate: Callable[[Any], dict[str, float]] | None = None,
    validation_interval: int = 1,
    validate_ema: bool = True,
    early_stopping_patience: int | None = None,
    wandb_init: dict[str, Any] | None = None,
    clearml_init: dict[str, Any] | None = None,
    last_validation: Callable[[], Any] | None = None,
    write_report: Callable[[Any, Path | None, int | None], Any] | None = None,
) -> list[Hook]:
    """The hooks of a training run, in the order they must run: validation (when ``validate`` is given) and early
    stopping on every rank; then, on the main process only, the files: ``model_best.pth``, the periodic
    checkpoints (after the hooks above, so an end-of-epoch checkpoint holds their state for the epoch),
    status.json, the experiment trackers whose ``*_init`` arguments are given, TensorBoard events in
    ``out_dir/events``, progress, and (when ``write_report`` is given) :class:`PlotsHook`'s ``out_dir/report``."""
    hooks: list[Hook] = []
    if validate is not None:
        hooks.append(EvalHook(validation_interval, validate, use_ema=validate_ema))
    if early_stopping_patience is not None:
        hooks.append(EarlyStoppingHook(monitor, goal, early_stopping_patience))
    if not is_main:
        return hooks
    best = BestCheckpointHook(out_dir, monitor, goal, checkpoint_extra)
    hooks += [
        best,
        CheckpointHook(out_dir, checkpoint_interval, checkpoint_unit, checkpoint_extra),
        StatusHook(status),
        *([WandBHook(wandb_init)] if wandb_init is not None else []),
        *([ClearMLHook(clearml_init)] if clearml_init is not None else []),
        TensorBoardHook(out_dir / "events"),
        ProgressHook(),
    ]
    if write_report is not None:
        hooks.append(PlotsHook(out_dir / "report", status.path, best, last_validation or (lambda: None), write_report))
    return hooks


def best_monitored(hooks: Sequence[Hook]) -> float | None:
    """The best monitored value the run reached: early stopping's (every rank), else the best checkpoint's."""
    return next((h.best for h in hooks if isinstance(h, (EarlyStoppingHook, BestCheckpointHook))), None)
