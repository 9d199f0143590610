"""``rtdetr train``: train RT-DETRv2 on COCO-format data, resumably, on one or many processes.

Writes under ``results_dir/train/``: ``experiment.yaml`` (the resolved spec), ``status.json``,
``log.txt``, TensorBoard events in ``events/``, ``model_epoch_XXX.pth`` (+ ``-EMA``),
``rtdetr_model_latest.pth``, ``model_best.pth``, ``val_metrics.json`` and, unless ``train.plots`` is false,
``report/`` (``curves.png`` and the evaluation report of the best validation, see :mod:`rtdetr_tao.outputs.report`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import ExperimentSpec
from ..data.categories import CategoryMap, model_category_map
from ..data.transforms import DenseO2O
from ..engine.checkpoint import BEST, find_latest, load_checkpoint, state_digest
from ..engine.distributed import unwrap
from ..engine.ema import ModelEMA
from ..engine.hooks import best_monitored, training_hooks
from ..engine.optim import LRSchedule, build_optimizer, freeze_modules, loss_groups, param_groups
from ..engine.setup import JobContext, start_job
from ..engine.trainer import EpochLoader, Hook, LossFn, Trainer, epoch_text
from ..engine.validation import CocoValidation
from ..errors import CheckpointError, SpecError
from ..eval.coco import CocoEvaluation
from ..model.criterion import to_float

log = logging.getLogger(__name__)

MakeLoss = Callable[[ExperimentSpec, nn.Module, JobContext, nn.Module], LossFn]
"""(spec, criterion, job, model) -> the loss the trainer minimises; an ``nn.Module`` with parameters is trained
and checkpointed too."""
InitModel = Callable[[nn.Module, JobContext], None]


@dataclass
class TrainResult:
    """What a finished run leaves behind."""

    results_dir: Path
    last_checkpoint: Path | None
    best_metrics: dict[str, float] = field(default_factory=dict)
    epochs_run: int = 0
    stop_reason: str | None = None


@dataclass(frozen=True)
class Resume:
    """The checkpoint a run continues from."""

    path: Path
    state: dict[str, Any]


def run(spec: ExperimentSpec) -> TrainResult:
    """Train ``spec.model`` on ``spec.dataset`` as ``spec.train`` says."""
    return train(spec, action="train", make_loss=detection_loss)


def train(
    spec: ExperimentSpec, *, action: str, make_loss: MakeLoss, init_model: InitModel | None = None
) -> TrainResult:
    """The training job shared by ``train`` and ``distill`` (which brings its own loss, and ``init_model`` to
    prepare the fresh model), step by step. The order is part of the result: the model's and the loss's random
    initialisation follow the job's seed, and the EMA copy is taken of the model the loss has prepared."""
    resume = _resume_point(spec, action)  # refused before the job starts: the old run's files stay untouched
    cfg = spec.train
    with start_job(spec, action, device=cfg.device, device_ids=cfg.device_ids, seed=cfg.seed, cudnn=cfg.cudnn) as ctx:
        category_map = model_category_map(spec.dataset, resume.state.get("category_map") if resume else None)
        model = _model(spec, ctx, fresh=resume is None, init_model=init_model)
        criterion, loss_fn = _loss(spec, ctx, model, make_loss)
        optimizer = _optimizer(spec, model, loss_fn)
        ema = _ema(spec, model)
        train_model = ctx.wrap_ddp(model, sync_bn=spec.train.sync_bn)
        loader = _data(spec, ctx, category_map)
        trainer = _trainer(spec, ctx, train_model, loss_fn, optimizer, loader, ema)
        for hook in _hooks(spec, ctx, trainer, criterion, category_map):
            trainer.register(hook)
        if resume is not None:
            _restore(trainer, resume, spec.train.num_epochs)
        state = trainer.train()
        params = dict(unwrap(train_model).named_parameters())  # BN statistics stay rank-local after the last step
        log.info("rank %d: final parameters %s", ctx.rank, state_digest(params))
        ctx.outputs.final_message = state.stop_reason or f"Training finished: {state.epoch} epochs."
        best = best_monitored(trainer.hooks)
        return TrainResult(
            results_dir=ctx.out_dir,
            last_checkpoint=find_latest(ctx.out_dir),
            best_metrics={spec.train.optim.monitor_name: best} if best is not None else {},
            epochs_run=state.epoch,
            stop_reason=state.stop_reason,
        )


# --- the steps, in the order train() runs them ---------------------------------------------------------------------


def _resume_point(spec: ExperimentSpec, action: str) -> Resume | None:
    """Resume: ``train.resume_training_checkpoint_path``, else the newest checkpoint in the results folder; checked
    against the spec's model settings."""
    path = _resume_path(spec, Path(spec.action_dir(action)))
    if path is None:
        return None
    state = load_checkpoint(path)
    _check_resumable(state, spec, path)
    return Resume(path, state)


def _model(spec: ExperimentSpec, ctx: JobContext, *, fresh: bool, init_model: InitModel | None) -> nn.Module:
    """Model: built from ``spec.model``; a fresh run starts from ``train.pretrained_model_path`` (and
    ``init_model``); ``train.freeze`` and ``model.train_backbone`` freeze parts; on the job's device."""
    from ..model.build import build_model
    from ..model.weights import check_fit, load_weights

    model = build_model(
        spec.model,
        spec.dataset.num_classes,
        eval_spatial_size=spec.dataset.augmentation.eval_spatial_size,
        activation_checkpoint=spec.train.activation_checkpoint,
    )
    if spec.train.pretrained_model_path and fresh:
        report = load_weights(model, spec.train.pretrained_model_path)
        log.info("pretrained weights: %s", report.summary())
        check_fit(report, strict=spec.train.strict_load, key="train.pretrained_model_path")
    if init_model is not None and fresh:
        init_model(model, ctx)
    _freeze(model, spec)
    return model.to(ctx.device)


def _loss(spec: ExperimentSpec, ctx: JobContext, model: nn.Module, make_loss: MakeLoss) -> tuple[nn.Module, LossFn]:
    """Loss: the recipe's criterion (VFL or MAL, L1, GIoU ...) and the loss ``make_loss`` builds on it."""
    from ..model.build import build_criterion

    criterion = build_criterion(spec.model, spec.dataset.num_classes, loss_types=spec.recipe.loss_types)
    criterion = criterion.to(ctx.device)
    loss_fn = make_loss(spec, criterion, ctx, model)
    if isinstance(loss_fn, nn.Module):
        loss_fn.to(ctx.device)
    return criterion, loss_fn


def _optimizer(spec: ExperimentSpec, model: nn.Module, loss_fn: LossFn) -> torch.optim.Optimizer:
    """Optimiser: ``train.optim``'s groups (backbone, linear projections, detector; no weight decay on norms and
    biases) plus the loss's own parameters when it learns."""
    optim = spec.train.optim
    log.info(
        "learning rates: detector %.2e, backbone %.2e%s",
        optim.lr,
        spec.lr_backbone,
        "" if optim.lr_backbone is not None else f" (scale-adaptive for {spec.model.backbone})",
    )
    groups = param_groups(
        model,
        lr=optim.lr,
        lr_backbone=spec.lr_backbone,
        weight_decay=optim.weight_decay,
        backbone_names=spec.model.backbone_names,
        linear_proj_names=spec.model.linear_proj_names,
        linear_proj_mult=spec.model.lr_linear_proj_mult,
    )
    groups += loss_groups(loss_fn, lr=optim.lr, weight_decay=optim.weight_decay)
    return build_optimizer(optim.optimizer, groups, lr=optim.lr, momentum=optim.momentum)


def _ema(spec: ExperimentSpec, model: nn.Module) -> ModelEMA | None:
    """EMA: the averaged copy of the weights, when ``train.enable_ema``."""
    if not spec.train.enable_ema:
        return None
    ema = spec.train.ema
    return ModelEMA(model, ema.decay, ema.warmup_steps, device="cpu" if ema.cpu_offload else None)


def _data(spec: ExperimentSpec, ctx: JobContext, category_map: CategoryMap) -> EpochLoader:
    """Data: this process's share of ``dataset.train_data_sources``, augmented as the recipe says."""
    from ..data.loader import build_train_loader

    recipe = spec.recipe
    return build_train_loader(
        spec.dataset,
        num_epochs=spec.train.num_epochs,
        stop_epoch=spec.aug_stop_epoch,
        seed=ctx.seed,
        world_size=ctx.world_size,
        rank=ctx.rank,
        category_map=category_map,
        dense_o2o=DenseO2O(recipe.mosaic_prob, recipe.mosaic_epochs, recipe.mixup_prob, recipe.mixup_epochs),
    )


def _trainer(
    spec: ExperimentSpec,
    ctx: JobContext,
    model: nn.Module,
    loss_fn: LossFn,
    optimizer: torch.optim.Optimizer,
    loader: EpochLoader,
    ema: ModelEMA | None,
) -> Trainer:
    """Trainer: the loop over ``loader`` with the recipe's learning-rate schedule, precision and clipping."""
    optim, recipe = spec.train.optim, spec.recipe
    schedule = LRSchedule(
        recipe.lr_scheduler,
        milestones=tuple(optim.lr_steps),
        step_size=optim.lr_step_size,
        decay=optim.lr_decay,
        warmup_steps=optim.warmup_steps,
        steps_per_epoch=len(loader),
        num_epochs=spec.train.num_epochs,
        flat_epochs=recipe.flat_epochs,
        no_aug_epochs=recipe.no_aug_epochs,
        min_factor=optim.min_lr_factor,
    )
    log.info("recipe %s: %s", recipe.name, recipe)
    return Trainer(
        model=model,
        loss_fn=loss_fn,
        optimizer=optimizer,
        schedule=schedule,
        loader=loader,
        device=ctx.device,
        num_epochs=spec.train.num_epochs,
        seed=ctx.seed,
        rank=ctx.rank,
        precision=spec.train.precision,
        clip_grad_norm=spec.clip_grad_norm,
        ema=ema,
        ema_every=spec.train.ema.every_n_steps,
    )


def _hooks(
    spec: ExperimentSpec, ctx: JobContext, trainer: Trainer, criterion: nn.Module, category_map: CategoryMap
) -> list[Hook]:
    """Hooks: validation on ``dataset.val_data_sources``, early stopping, checkpoints, status.json, trackers,
    TensorBoard, progress and, unless ``train.plots`` is false, the report of the best validation."""
    from ..data.loader import build_eval_loader

    validation: CocoValidation | None = None
    val_paths: dict[int, Path] = {}
    if spec.dataset.val_data_sources is not None:
        val_loader, coco_gt = build_eval_loader(
            spec.dataset, "val", category_map=category_map, world_size=ctx.world_size, rank=ctx.rank
        )
        val_paths = {record.image_id: record.path for record in val_loader.dataset.records}
        validation = CocoValidation(
            val_loader,
            coco_gt,
            category_map,
            trainer=trainer,
            criterion=criterion,
            num_select=spec.model.num_select,
            eval_class_ids=spec.dataset.eval_class_ids,
            metrics_file=ctx.out_dir / "val_metrics.json",
            is_main=ctx.is_main,
            keep_last=spec.train.plots,
        )
    monitor = spec.train.optim.monitor_name

    def write_report(evaluation: CocoEvaluation, curves: Path | None, epoch: int | None) -> None:
        from ..outputs.report import write_report

        write_report(
            ctx.out_dir / "report",
            evaluation,
            category_map.label_to_category,
            image_path=val_paths.get,
            title=f"Validation of {BEST if epoch is not None else 'the last epoch'}",
            context={"results": str(ctx.out_dir), "best epoch": epoch, "monitor": monitor},
            curves=curves,
        )

    return training_hooks(
        out_dir=ctx.out_dir,
        status=ctx.status,
        is_main=ctx.is_main,
        monitor=monitor,
        goal=spec.train.optim.monitor_goal,
        checkpoint_extra={"spec": spec.model_dump(mode="json"), "category_map": category_map.to_dict()},
        checkpoint_interval=spec.train.checkpoint_interval,
        checkpoint_unit=spec.train.checkpoint_interval_unit,
        validate=validation,
        validation_interval=spec.train.validation_interval,
        validate_ema=not spec.train.ema.validate_original_weights,
        early_stopping_patience=spec.train.early_stopping_patience,
        wandb_init=wandb_init_kwargs(spec, ctx.out_dir) if spec.wandb.enable else None,
        clearml_init=clearml_init_kwargs(spec) if spec.clearml.enable else None,
        last_validation=lambda: validation.last if validation is not None else None,
        write_report=write_report if spec.train.plots else None,
    )


def _restore(trainer: Trainer, resume: Resume, num_epochs: int) -> None:
    """Resume: the checkpoint's weights, optimiser, EMA, loss, hook state and position in the schedule."""
    unwrap(trainer.model).load_state_dict(resume.state["model"])
    trainer.load_state_dict(resume.state)
    log.info(
        "resuming from %s at %s, step %d", resume.path,
        epoch_text(trainer.state.epoch, num_epochs), trainer.state.global_step,
    )  # fmt: skip


def wandb_init_kwargs(spec: ExperimentSpec, out_dir: Path) -> dict[str, Any]:
    """``wandb.init`` arguments from the ``wandb`` section; the run's files go to ``out_dir/wandb/``. The run's
    config is the spec without ``encryption_key``."""
    cfg = spec.wandb
    return {
        "project": cfg.project,
        "entity": cfg.entity,
        "group": cfg.group,
        "tags": list(cfg.tags),
        "name": cfg.name,
        "id": cfg.run_id,
        "reinit": cfg.reinit,
        "sync_tensorboard": cfg.sync_tensorboard,
        "save_code": cfg.save_code,
        "dir": str(out_dir),
        "config": spec.model_dump(mode="json", exclude={"encryption_key"}),
    }


def clearml_init_kwargs(spec: ExperimentSpec) -> dict[str, Any]:
    """``clearml.Task.init`` arguments from the ``clearml`` section."""
    cfg = spec.clearml
    return {
        "project_name": cfg.project,
        "task_name": cfg.task,
        "tags": list(cfg.tags),
        "deferred_init": cfg.deferred_init,
        "reuse_last_task_id": cfg.reuse_last_task_id,
        "continue_last_task": cfg.continue_last_task,
    }


def detection_loss(spec: ExperimentSpec, criterion: nn.Module, ctx: JobContext, model: nn.Module) -> LossFn:
    """The RT-DETRv2 objective: forward under autocast, VFL + L1 + GIoU (aux, encoder, denoising) in fp32."""

    def loss_fn(model: nn.Module, images: torch.Tensor, targets: list[dict[str, Any]], autocast) -> dict:
        with autocast():
            outputs = model(images, targets)
        return criterion(to_float(outputs), targets)

    return loss_fn


def _resume_path(spec: ExperimentSpec, out_dir: Path) -> Path | None:
    path = spec.train.resume_training_checkpoint_path
    if path:
        if not Path(path).is_file():
            raise CheckpointError(
                f"train.resume_training_checkpoint_path {path} does not exist; fix the path or remove the key "
                "(a rerun in the same results_dir resumes from its latest checkpoint by itself)"
            )
        return Path(path)
    latest = find_latest(out_dir)
    if latest is not None:
        log.info("found %s in %s: resuming from it", latest.name, out_dir)
    return latest


def _check_resumable(state: dict[str, Any], spec: ExperimentSpec, path: Path | None) -> None:
    saved_spec = state.get("spec", {})
    saved = {f"model.{k}": v for k, v in saved_spec.get("model", {}).items()}
    saved["dataset.num_classes"] = saved_spec.get("dataset", {}).get("num_classes")
    current = {f"model.{k}": v for k, v in spec.model.model_dump(mode="json").items()}
    current["dataset.num_classes"] = spec.dataset.num_classes
    changed = sorted(k for k in current if saved.get(k) is not None and saved[k] != current[k])
    if changed:
        keys = ", ".join(changed)
        raise CheckpointError(
            f"cannot resume from {path}: it was trained with other model settings ({keys}); "
            "use train.pretrained_model_path to start a new run from its weights"
        )


def _freeze(model: nn.Module, spec: ExperimentSpec) -> None:
    prefixes = list(spec.train.freeze)
    if not spec.model.train_backbone:
        prefixes.append("backbone")
    unknown = freeze_modules(model, prefixes)
    if unknown:
        names = sorted({n.split(".")[0] for n, _ in model.named_parameters()})
        raise SpecError(f"train.freeze: no module named {unknown}; top-level modules are {names}")
