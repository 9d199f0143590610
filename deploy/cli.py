"""``rtdetr-deploy gen_trt_engine | evaluate | inference -e spec.yaml [key=value ...]`` (no PyTorch needed)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from rtdetr_tao.cli import Action, run_cli

DEPLOY_ACTIONS: dict[str, Action] = {
    "gen_trt_engine": Action(
        "rtdetr_deploy.actions.gen_trt_engine", "gen_trt_engine", "Build a TensorRT engine from an exported ONNX."
    ),
    "evaluate": Action("rtdetr_deploy.actions.evaluate", "deploy_evaluate", "COCO metrics of an engine or ONNX file."),
    "inference": Action(
        "rtdetr_deploy.actions.inference", "deploy_inference", "Detections from an engine or ONNX file."
    ),
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rtdetr-deploy`` console script."""
    return run_cli("rtdetr-deploy", DEPLOY_ACTIONS, argv)


if __name__ == "__main__":
    sys.exit(main())
