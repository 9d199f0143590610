"""Torch-free writers for what evaluate and inference leave behind.

Modules (import them directly; this package imports nothing):

* ``status``: ``StatusLogger`` for status.json
* ``classmap``: ``read_classmap``
* ``kitti``: KITTI label files
* ``coco_json``: the COCO results file
* ``draw``: annotated images
* ``metrics``: the metrics JSON
* ``jsonable``: strict-JSON conversion (NaN → null)
"""
