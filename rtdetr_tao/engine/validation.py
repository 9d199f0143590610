"""COCO validation during training, run by :class:`~rtdetr_tao.engine.hooks.EvalHook`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from ..eval.coco import CocoEvaluation, coco_evaluation
from ..outputs.metrics import write_metrics
from . import distributed as dist
from .predict import gather_predictions, predict

if TYPE_CHECKING:
    from ..data.categories import CategoryMap
    from .trainer import EpochLoader, Trainer


class CocoValidation:
    """``validation(model) -> {"val_mAP": .., "val_loss": ..}``, the same on every rank: every rank predicts its
    share of ``loader`` (under the trainer's autocast, with ``criterion``'s losses); the main process gathers the
    detections, evaluates them against ``coco_gt`` and writes ``metrics_file`` (with the trainer's epoch). With
    ``keep_last``, the main process keeps the newest evaluation in ``last`` (for the end-of-training report)."""

    def __init__(
        self,
        loader: EpochLoader,
        coco_gt: Any,
        category_map: CategoryMap,
        *,
        trainer: Trainer,
        criterion: nn.Module,
        num_select: int,
        eval_class_ids: list[int] | None,
        metrics_file: Path,
        is_main: bool,
        keep_last: bool = False,
    ):
        self.loader, self.coco_gt, self.category_map = loader, coco_gt, category_map
        self.trainer, self.criterion, self.num_select = trainer, criterion, num_select
        self.eval_class_ids, self.metrics_file = eval_class_ids, metrics_file
        self.is_main, self.keep_last = is_main, keep_last
        self.last: CocoEvaluation | None = None

    def __call__(self, model: nn.Module) -> dict[str, float]:
        device = self.trainer.device
        detections, losses = predict(
            model,
            self.loader,
            device,
            num_select=self.num_select,
            criterion=self.criterion,
            autocast=self.trainer.autocast,
        )
        detections, losses = gather_predictions(detections, losses, device)
        kpi: dict[str, float] | None = None
        if self.is_main:
            evaluation = coco_evaluation(
                self.coco_gt,
                detections,
                self.category_map.label_to_category,
                category_names=self.category_map.names_by_category,
                eval_class_ids=self.eval_class_ids,
            )
            if self.keep_last:
                self.last = evaluation
            kpi = {**evaluation.metrics.kpi("val"), "val_loss": losses.get("loss", float("nan"))}
            write_metrics(self.metrics_file, evaluation.metrics, {"epoch": self.trainer.state.epoch, **kpi})
        return dist.broadcast_object(kpi)
