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
from ..data.categories import model_category_map
from ..data.transforms import DenseO2O
from ..engine import distributed as dist
from ..engine.checkpoint import BEST, find_latest, load_checkpoint, state_digest
from ..engine.distributed import unwrap
from ..engine.ema import ModelEMA
from ..engine.hooks import (
    BestCheckpointHook,
    CheckpointHook,
    ClearMLHook,
    EarlyStoppingHook,
    EvalHook,
    PlotsHook,
    ProgressHook,
    StatusHook,
    TensorBoardHook,
    WandBHook,
)
from ..engine.optim import LRSchedule, build_optimizer, freeze_modules, param_groups
from ..engine.predict import gather_predictions, predict
from ..engine.setup import JobContext, start_job
from ..engine.trainer import Hook, LossFn, Trainer, epoch_text
from ..errors import CheckpointError, SpecError
from ..eval.coco import CocoEvaluation, coco_evaluation
from ..model.criterion import to_float
from ..outputs.metrics import write_metrics

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a finished run leaves behind."""

    results_dir: Path
    last_checkpoint: Path | None
    best_metrics: dict[str, float] = field(default_factory=dict)
    epochs_run: int = 0
    stop_reason: str | None = None


def run(spec: ExperimentSpec) -> TrainResult:
    """Train ``spec.model`` on ``spec.dataset`` as ``spec.train`` says."""
    return train(spec, action="train", make_loss=detection_loss)


def train(
    spec: ExperimentSpec,
    *,
    action: str,
    make_loss: Callable[[ExperimentSpec, nn.Module, JobContext, nn.Module], LossFn],
    init_model: Callable[[nn.Module, JobContext], None] | None = None,
) -> TrainResult:
    """The training job shared by ``train`` and ``distill`` (which brings its own loss, and ``init_model`` to
    prepare the fresh model). A loss that is an ``nn.Module`` with parameters is trained and checkpointed too."""
    resume_path = _resume_path(spec, Path(spec.action_dir(action)))
    resume_state = load_checkpoint(resume_path) if resume_path else None
    if resume_state is not None:  # refused before the job starts: the old run's files stay untouched
        _check_resumable(resume_state, spec, resume_path)
    cfg = spec.train
    with start_job(spec, action, device=cfg.device, device_ids=cfg.device_ids, seed=cfg.seed, cudnn=cfg.cudnn) as ctx:
        from ..data.loader import build_eval_loader, build_train_loader
        from ..model.build import build_criterion, build_model
        from ..model.weights import check_fit, load_weights

        category_map = model_category_map(spec.dataset, (resume_state or {}).get("category_map"))
        num_classes = spec.dataset.num_classes

        model = build_model(
            spec.model,
            num_classes,
            eval_spatial_size=spec.dataset.augmentation.eval_spatial_size,
            activation_checkpoint=spec.train.activation_checkpoint,
        )
        if spec.train.pretrained_model_path and resume_state is None:
            report = load_weights(model, spec.train.pretrained_model_path)
            log.info("pretrained weights: %s", report.summary())
            check_fit(report, strict=spec.train.strict_load, key="train.pretrained_model_path")
        if init_model is not None and resume_state is None:
            init_model(model, ctx)
        _freeze(model, spec)
        model.to(ctx.device)
        recipe = spec.recipe
        criterion = build_criterion(spec.model, num_classes, loss_types=recipe.loss_types).to(ctx.device)
        loss_fn = make_loss(spec, criterion, ctx, model)
        lr_backbone = spec.lr_backbone
        log.info(
            "learning rates: detector %.2e, backbone %.2e%s",
            spec.train.optim.lr,
            lr_backbone,
            "" if spec.train.optim.lr_backbone is not None else f" (scale-adaptive for {spec.model.backbone})",
        )
        groups = param_groups(
            model,
            lr=spec.train.optim.lr,
            lr_backbone=lr_backbone,
            weight_decay=spec.train.optim.weight_decay,
            backbone_names=spec.model.backbone_names,
            linear_proj_names=spec.model.linear_proj_names,
            linear_proj_mult=spec.model.lr_linear_proj_mult,
        )
        if isinstance(loss_fn, nn.Module):
            loss_fn.to(ctx.device)
            trainable = [p for p in loss_fn.parameters() if p.requires_grad]
            if trainable:
                wd = spec.train.optim.weight_decay
                groups.append({"name": "loss", "params": trainable, "lr": spec.train.optim.lr, "weight_decay": wd})
        optimizer = build_optimizer(
            spec.train.optim.optimizer, groups, lr=spec.train.optim.lr, momentum=spec.train.optim.momentum
        )
        ema = None
        if spec.train.enable_ema:
            ema = ModelEMA(
                model,
                spec.train.ema.decay,
                spec.train.ema.warmup_steps,
                device="cpu" if spec.train.ema.cpu_offload else None,
            )
        train_model = ctx.wrap_ddp(model, sync_bn=spec.train.sync_bn)
        loader = build_train_loader(
            spec.dataset,
            num_epochs=spec.train.num_epochs,
            stop_epoch=spec.aug_stop_epoch,
            seed=ctx.seed,
            world_size=ctx.world_size,
            rank=ctx.rank,
            category_map=category_map,
            dense_o2o=DenseO2O(recipe.mosaic_prob, recipe.mosaic_epochs, recipe.mixup_prob, recipe.mixup_epochs),
        )
        optim = spec.train.optim
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
        trainer = Trainer(
            model=train_model,
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
        extra = {"spec": spec.model_dump(mode="json"), "category_map": category_map.to_dict()}
        hooks: list[Hook] = []
        validations: list[CocoEvaluation] = []  # rank 0: the newest validation only
        val_paths: dict[int, Path] = {}
        if spec.dataset.val_data_sources is not None:
            val_loader, coco_gt = build_eval_loader(
                spec.dataset, "val", category_map=category_map, world_size=ctx.world_size, rank=ctx.rank
            )
            val_paths = {record.image_id: record.path for record in val_loader.dataset.records}
            hooks.append(
                EvalHook(
                    spec.train.validation_interval,
                    _validator(spec, ctx, val_loader, coco_gt, category_map, criterion, trainer, validations),
                    use_ema=not spec.train.ema.validate_original_weights,
                )
            )
        monitor, goal = spec.train.optim.monitor_name, spec.train.optim.monitor_goal
        if spec.train.early_stopping_patience is not None:
            hooks.append(EarlyStoppingHook(monitor, goal, spec.train.early_stopping_patience))  # every rank
        if ctx.is_main:
            best_hook = BestCheckpointHook(ctx.out_dir, monitor, goal, extra)
            hooks += [
                best_hook,
                # after the hooks above, so an end-of-epoch checkpoint holds their state for this epoch
                CheckpointHook(ctx.out_dir, spec.train.checkpoint_interval, spec.train.checkpoint_interval_unit, extra),
                StatusHook(ctx.status),
                *([WandBHook(wandb_init_kwargs(spec, ctx.out_dir))] if spec.wandb.enable else []),
                *([ClearMLHook(clearml_init_kwargs(spec))] if spec.clearml.enable else []),
                TensorBoardHook(ctx.out_dir / "events"),
                ProgressHook(),
            ]
            if spec.train.plots:

                def report(evaluation: CocoEvaluation, curves: Path | None, epoch: int | None) -> None:
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

                last = lambda: validations[-1] if validations else None  # noqa: E731
                hooks.append(PlotsHook(ctx.out_dir / "report", ctx.status.path, best_hook, last, report))
        for hook in hooks:
            trainer.register(hook)

        if resume_state is not None:
            unwrap(train_model).load_state_dict(resume_state["model"])
            trainer.load_state_dict(resume_state)
            log.info(
                "resuming from %s at %s, step %d", resume_path,
                epoch_text(trainer.state.epoch, spec.train.num_epochs), trainer.state.global_step,
            )  # fmt: skip
        state = trainer.train()
        params = dict(unwrap(train_model).named_parameters())  # BN statistics stay rank-local after the last step
        log.info("rank %d: final parameters %s", ctx.rank, state_digest(params))
        ctx.outputs.final_message = state.stop_reason or f"Training finished: {state.epoch} epochs."
        best = next((h.best for h in hooks if isinstance(h, (BestCheckpointHook, EarlyStoppingHook))), None)
        return TrainResult(
            results_dir=ctx.out_dir,
            last_checkpoint=find_latest(ctx.out_dir),
            best_metrics={monitor: best} if best is not None else {},
            epochs_run=state.epoch,
            stop_reason=state.stop_reason,
        )


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


def _validator(
    spec, ctx, loader, coco_gt, category_map, criterion, trainer, keep: list[CocoEvaluation]
) -> Callable[[nn.Module], dict]:
    """COCO validation on every rank; metrics computed on rank 0 and shared; rank 0 keeps the newest
    evaluation in ``keep`` when ``train.plots`` asks for a report."""

    def validate(model: nn.Module) -> dict[str, float]:
        detections, losses = predict(
            model,
            loader,
            ctx.device,
            num_select=spec.model.num_select,
            criterion=criterion,
            autocast=trainer.autocast,
        )
        detections, losses = gather_predictions(detections, losses, ctx.device)
        kpi: dict[str, float] | None = None
        if ctx.is_main:
            evaluation = coco_evaluation(
                coco_gt,
                detections,
                category_map.label_to_category,
                category_names=category_map.names_by_category,
                eval_class_ids=spec.dataset.eval_class_ids,
            )
            metrics = evaluation.metrics
            if spec.train.plots:
                keep[:] = [evaluation]
            kpi = {**metrics.kpi("val"), "val_loss": losses.get("loss", float("nan"))}
            write_metrics(ctx.out_dir / "val_metrics.json", metrics, {"epoch": trainer.state.epoch, **kpi})
        return dist.broadcast_object(kpi)

    return validate


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
