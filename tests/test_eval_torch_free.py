"""rtdetr-deploy runs without PyTorch: nothing in eval/, outputs/, the runtime (rtdetr_tao.runtime) or the
rtdetr_deploy package may import torch."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import importlib, pkgutil, sys
import rtdetr_deploy, rtdetr_tao.eval, rtdetr_tao.outputs, rtdetr_tao.runtime
names = [
    info.name
    for package in (rtdetr_tao.eval, rtdetr_tao.outputs, rtdetr_tao.runtime, rtdetr_deploy)
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + ".")
]
for name in names:
    importlib.import_module(name)
for expected in ("rtdetr_tao.runtime.backends", "rtdetr_tao.runtime.tensorrt", "rtdetr_tao.runtime.detect",
                 "rtdetr_tao.runtime.inference",
                 "rtdetr_deploy.cli", "rtdetr_deploy.tensorrt", "rtdetr_deploy.actions.inference"):
    assert expected in names, (expected, names)
heavy = sorted(m for m in ("torch", "torchvision") if m in sys.modules)
assert not heavy, heavy
"""


def test_deploy_runtime_eval_and_outputs_import_no_torch() -> None:
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
