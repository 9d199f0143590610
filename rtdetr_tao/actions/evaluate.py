"""``rtdetr evaluate``: COCO metrics of a trained model on ``dataset.test_data_sources``.

Writes under ``results_dir/evaluate/`` (or ``evaluate.results_dir``): ``results.json`` (AP, AP50, AP75, APs, APm,
APl, AR..., AP per class, the checkpoint and settings), ``report/`` (plots, worst-image gallery and
``report.html``, see :mod:`rtdetr_tao.outputs.report`) and status.json whose SUCCESS entry carries the KPIs
``test_mAP`` and ``test_mAP50``. Every image of the test set counts, also those without detections above
``evaluate.conf_threshold`` (TAO drops them and shifts the remaining predictions onto wrong image ids).
"""

from __future__ import annotations

import logging

from ..config import ExperimentSpec
from ..engine.predict import gather_predictions, predict
from ..engine.restore import load_trained_model
from ..engine.setup import start_job
from ..eval.coco import CocoMetrics, coco_evaluation
from ..outputs.metrics import write_metrics
from ..outputs.report import write_report

log = logging.getLogger(__name__)


def run(spec: ExperimentSpec) -> CocoMetrics:
    """Evaluate ``evaluate.checkpoint`` on the test set."""
    from ..data.loader import build_eval_loader

    cfg = spec.evaluate
    dataset = spec.dataset
    size = list(dataset.augmentation.eval_spatial_size)
    if cfg.input_height or cfg.input_width:
        size = [cfg.input_height or size[0], cfg.input_width or size[1]]
        dataset = dataset.model_copy(
            update={"augmentation": dataset.augmentation.model_copy(update={"eval_spatial_size": size})}
        )
    dataset = dataset.model_copy(update={"batch_size": spec.batch_size_for("evaluate")})
    train = spec.train  # one process on train.device (evaluate.num_gpus and gpu_ids are compatibility-only)
    with start_job(
        spec, "evaluate", device=train.device, device_ids=train.device_ids, seed=train.seed, cudnn=train.cudnn
    ) as ctx:
        trained = load_trained_model(cfg.checkpoint, spec, eval_spatial_size=tuple(size))
        trained.check_quantized(cfg.is_quantized, "evaluate.is_quantized")
        trained.model.to(ctx.device)
        loader, coco_gt = build_eval_loader(
            dataset, "test", category_map=trained.category_map, world_size=ctx.world_size, rank=ctx.rank
        )
        detections, _ = predict(trained.model, loader, ctx.device, num_select=spec.model.num_select)
        detections, _ = gather_predictions(detections, {}, ctx.device)
        detections = [d.filter(cfg.conf_threshold) for d in detections]
        evaluation = coco_evaluation(
            coco_gt,
            detections,
            trained.category_map.label_to_category,
            category_names=trained.category_map.names_by_category,
            eval_class_ids=dataset.eval_class_ids,
        )
        metrics = evaluation.metrics
        kpi = metrics.kpi("test")
        if ctx.is_main:
            context = {"checkpoint": cfg.checkpoint, "conf_threshold": cfg.conf_threshold, "input_size": size}
            write_metrics(ctx.out_dir / "results.json", metrics, {**context, **kpi})
            print(metrics.table())
            paths = {record.image_id: record.path for record in loader.dataset.records}
            write_report(
                ctx.out_dir / "report",
                evaluation,
                trained.category_map.label_to_category,
                image_path=paths.get,
                title=f"Evaluation of {cfg.checkpoint}",
                context=context,
            )
        ctx.outputs.final_fields = {"kpi": kpi}
        ctx.outputs.final_message = f"Evaluation finished: mAP {metrics.AP:.4f}, mAP50 {metrics.AP50:.4f}."
        return metrics
