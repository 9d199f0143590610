"""rtdetr-deploy runs without PyTorch: nothing in eval/ or outputs/ may import torch."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import importlib, pkgutil, sys
import rtdetr_tao.eval, rtdetr_tao.outputs
names = [
    info.name
    for package in (rtdetr_tao.eval, rtdetr_tao.outputs)
    for info in pkgutil.iter_modules(package.__path__, package.__name__ + ".")
]
for name in names:
    importlib.import_module(name)
assert len(names) >= 10, names
heavy = sorted(m for m in ("torch", "torchvision") if m in sys.modules)
assert not heavy, heavy
"""


def test_eval_and_outputs_import_no_torch() -> None:
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
