"""``rtdetr-deploy evaluate``: COCO metrics of a TensorRT engine or ONNX file on ``dataset.test_data_sources``.

The same preprocessing, post-processing, metrics, ``results.json`` and ``report/`` as ``rtdetr evaluate``; every
test image counts, also those left without detections by ``evaluate.conf_threshold``.
"""

from __future__ import annotations

from rtdetr_tao.config import ExperimentSpec
from rtdetr_tao.eval.coco import CocoMetrics, coco_evaluation, coco_from_file
from rtdetr_tao.outputs.job import job_outputs
from rtdetr_tao.outputs.metrics import write_metrics
from rtdetr_tao.outputs.report import write_report
from rtdetr_tao.runtime.backends import open_backend
from rtdetr_tao.runtime.detect import detect


def run(spec: ExperimentSpec) -> CocoMetrics:
    """Evaluate ``evaluate.trt_engine`` (an engine or .onnx)."""
    from rtdetr_tao.data.locate import ImageLocator
    from rtdetr_tao.data.sources import resolve_file, resolve_image_dir

    cfg, source = spec.evaluate, spec.dataset.test_data_sources
    batch = spec.batch_size_for("deploy_evaluate")
    with job_outputs(spec, "deploy_evaluate") as job:
        backend = open_backend(cfg.trt_engine, max_batch=batch)
        meta = backend.metadata
        coco_gt = coco_from_file(resolve_file(source.json_file, spec.dataset.cache_dir))
        image_dir = resolve_image_dir(source.image_dir, spec.dataset.cache_dir)
        locator = ImageLocator(image_dir, source.json_file)
        items = [(i, locator.find(str(coco_gt.imgs[i]["file_name"]))) for i in sorted(coco_gt.getImgIds())]
        detections = [d.filter(cfg.conf_threshold) for _, d, _ in detect(backend, items, batch)]
        evaluation = coco_evaluation(
            coco_gt,
            detections,
            meta.label_to_category,
            category_names=dict(zip(meta.label_to_category, meta.class_names, strict=True)),
            eval_class_ids=spec.dataset.eval_class_ids,
        )
        metrics = evaluation.metrics
        kpi = metrics.kpi("test")
        context = {"model": str(cfg.trt_engine), "conf_threshold": cfg.conf_threshold}
        write_metrics(job.out_dir / "results.json", metrics, {**context, **kpi})
        print(metrics.table())
        paths = dict(items)
        write_report(
            job.out_dir / "report",
            evaluation,
            meta.label_to_category,
            image_path=paths.get,
            title=f"Evaluation of {cfg.trt_engine}",
            context=context,
        )
        job.final_fields = {"kpi": kpi}
        job.final_message = f"Evaluation finished: mAP {metrics.AP:.4f}, mAP50 {metrics.AP50:.4f}."
        return metrics
