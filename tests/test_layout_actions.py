"""Every action that reads images runs on every exported layout (TAO tarball, Roboflow, CVAT folder and zip,
FiftyOne, Label Studio, and TAO's tarball on S3): a tiny model, 4 images of 32x32, one step per epoch.

The default suite trains on every layout and runs every action but quantize (ModelOpt calibration takes ~20 s) on
TAO's ``images.tar.gz`` (the layout issue 13 found broken); the rest of the cross-product is marked slow."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from layouts import LAYOUTS, build, moto_server, upload
from test_train import TINY_MODEL

from rtdetr_tao.cli import main
from rtdetr_tao.data.synthetic import write_split

LAYOUT_NAMES = [*LAYOUTS, "s3_tao_tar"]
ACTIONS = ["train", "evaluate", "inference", "deploy_evaluate", "distill", "quantize"]
DEFAULT_LAYOUT = "tao_tar"
STUDENT = {**TINY_MODEL, "hidden_dim": 16, "enc_hidden_dim": 16, "feat_channels": [16, 16, 16], "nheads": 2}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Iterator[dict[str, Any]]:
    """The synthetic split, a loopback S3 server, and the runs done so far (one training per layout)."""
    root = tmp_path_factory.mktemp("layout_actions")
    write_split(root / "split", 4, size=(32, 32), seed=11)
    with moto_server():
        yield {"root": root, "trained": {}}


def _spec(workspace: dict, name: str) -> tuple[Path, dict]:
    """The spec file of layout ``name`` (every source on that layout) and the layout."""
    root = workspace["root"] / name
    if name == "s3_tao_tar":
        layout = upload(build("tao_tar", workspace["root"] / "split", root), root, "layouts")
    else:
        layout = build(name, workspace["root"] / "split", root)
    source = {"image_dir": layout["image_dir"], "json_file": layout["json_file"]}
    spec = {
        "results_dir": str(root / "results"),
        "model": TINY_MODEL,
        "dataset": {
            "train_data_sources": [source],
            "test_data_sources": source,
            "infer_data_sources": {"image_dir": [layout["image_dir"]]},
            "quant_calibration_data_sources": source,
            "num_classes": layout["num_classes"],
            "batch_size": 4,
            "workers": 0,
            "cache_dir": str(root / "cache"),
            "augmentation": {"train_spatial_size": [32, 32], "eval_spatial_size": [32, 32], "multi_scales": []},
        },
        "train": {"num_epochs": 1, "device": "cpu"},
        "export": {"input_height": 32, "input_width": 32},
        "inference": {"conf_threshold": 0.0},
        "quantize": {
            "calibration_batches": 1,
            "layers": [{"module_name": "*", "weights": {"dtype": "int8"}, "activations": {"dtype": "int8"}}],
        },
    }
    path = root / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path, layout


def _trained(workspace: dict, name: str) -> tuple[str, Path]:
    """(spec file, checkpoint) of layout ``name``, trained on first use."""
    if name not in workspace["trained"]:
        path, _ = _spec(workspace, name)
        assert main(["train", "-e", str(path)]) == 0
        ckpt = path.parent / "results" / "train" / "model_epoch_000.pth"
        assert ckpt.is_file()
        workspace["trained"][name] = (str(path), ckpt)
    return workspace["trained"][name]


def _results(spec: str, action: str) -> dict:
    return json.loads((Path(spec).parent / "results" / action / "results.json").read_text())


def _run(workspace: dict, name: str, action: str) -> None:
    spec, ckpt = _trained(workspace, name)
    out = Path(spec).parent / "results"
    if action == "evaluate":
        assert main(["evaluate", "-e", spec, f"evaluate.checkpoint={ckpt}"]) == 0
        assert _results(spec, "evaluate")["num_images"] == 4
    elif action == "inference":
        assert main(["inference", "-e", spec, f"inference.checkpoint={ckpt}"]) == 0
        assert len(list((out / "inference" / "labels").rglob("*.txt"))) == 4  # names keep paths below image_dir
    elif action == "deploy_evaluate":
        from rtdetr_deploy.cli import main as deploy_main

        onnx_file = out / "model.onnx"
        assert main(["export", "-e", spec, f"export.checkpoint={ckpt}", f"export.onnx_file={onnx_file}"]) == 0
        assert deploy_main(["evaluate", "-e", spec, f"evaluate.trt_engine={onnx_file}"]) == 0
        assert _results(spec, "deploy_evaluate")["num_images"] == 4
    elif action == "distill":
        distill = f"distill={{teacher: {json.dumps(TINY_MODEL)}, pretrained_teacher_model_path: {ckpt}}}"
        assert main(["distill", "-e", spec, distill, f"model={json.dumps(STUDENT)}"]) == 0
        assert (out / "distill" / "model_epoch_000.pth").is_file()
    elif action == "quantize":
        pytest.importorskip("modelopt.torch.quantization", reason="quantize needs NVIDIA ModelOpt")
        assert main(["quantize", "-e", spec, f"quantize.model_path={ckpt}"]) == 0
        summary = json.loads((out / "quantize" / "quantization_summary.json").read_text())
        assert summary["mAP_before"] is not None  # the calibration source's images were all found and evaluated


def _cases() -> list[Any]:
    cases = []
    for name in LAYOUT_NAMES:
        for action in ACTIONS:
            default = action == "train" or (name == DEFAULT_LAYOUT and action != "quantize")  # quantize: ~20 s
            marks = () if default else (pytest.mark.slow,)
            cases.append(pytest.param(name, action, marks=marks, id=f"{name}-{action}"))
    return cases


@pytest.mark.parametrize(("name", "action"), _cases())
def test_action_runs_on_layout(workspace, name, action) -> None:
    if action == "train":
        _trained(workspace, name)
    else:
        _run(workspace, name, action)
