"""Torch-free evaluation: the detection record, numpy post-processing and COCO metrics.

Modules (import them directly; this package imports nothing):

* ``detections``: :class:`ImageDetections`, ``merge_detections``, ``coco_results`` (the COCO results list)
* ``postprocess``: raw ``pred_logits`` / ``pred_boxes`` → top-k detections in original pixels
* ``coco``: ``coco_from_file``, ``evaluate_coco`` → :class:`CocoMetrics`
"""
