"""Classmaps under both class-count conventions, local and on S3, in ``rtdetr inference`` and
``rtdetr-deploy inference`` (a tiny model trained on categories {3, 7, 12})."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from layouts import build
from test_data import s3_server  # noqa: F401 - the loopback S3 fixture
from test_train import TINY_MODEL

from rtdetr_tao.data.categories import category_map
from rtdetr_tao.data.synthetic import write_split
from rtdetr_tao.errors import DataError
from rtdetr_tao.outputs.classmap import read_classmap

CATEGORIES = {3: "rectangle", 7: "ellipse", 12: "triangle"}


def _read(tmp_path: Path, text: str, num_classes: int) -> list[str]:
    cmap = category_map(CATEGORIES, num_classes)
    path = tmp_path / "classmap.txt"
    path.write_text(text)
    return read_classmap(
        path, label_to_category=cmap.label_to_category, category_ids=cmap.defined_ids,
        default_names=cmap.category_names,
    )  # fmt: skip


@pytest.mark.parametrize("num_classes", [3, 13])
def test_a_name_per_category_in_id_order_works_under_both_conventions(tmp_path, num_classes) -> None:
    names = _read(tmp_path, "box\nround\nthree\n", num_classes)
    by_label = dict(zip(category_map(CATEGORIES, num_classes).label_to_category, names, strict=True))
    assert (by_label[3], by_label[7], by_label[12]) == ("box", "round", "three")


@pytest.mark.parametrize("num_classes", [3, 13])
def test_taos_max_id_plus_one_lines_work_and_unused_lines_are_free(tmp_path, num_classes) -> None:
    lines = ["", "x", "x", "box", "", "", "", "round", "x", "", "", "", "three"]  # unused lines: anything
    names = _read(tmp_path, "\n".join(lines) + "\n", num_classes)
    by_label = dict(zip(category_map(CATEGORIES, num_classes).label_to_category, names, strict=True))
    assert (by_label[3], by_label[7], by_label[12]) == ("box", "round", "three")
    if num_classes == 13:
        assert by_label[0] == "class_0"  # an id the annotations do not define keeps the checkpoint's name


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a\nb\n", r"lists 2 names .* write 3 lines .* or 13 lines"),
        ("a\n\nc\n", "line 2: empty class name for category id 7"),
        ("a\nb\na\n", "line 3: 'a' repeats line 1"),
        ("\n" * 3 + "a\n" + "\n" * 3 + "a\n" + "\n" * 4 + "c\n", "line 8: 'a' repeats line 4"),
    ],
)
def test_other_classmaps_are_one_line_errors(tmp_path, text, message) -> None:
    with pytest.raises(DataError, match=message) as error:
        _read(tmp_path, text, 13)
    assert "\n" not in str(error.value)


# --- end to end ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tao_numbered(tmp_path_factory) -> dict:
    """A tiny model trained for one step on TAO's class-count convention (ids {3, 7, 12}, num_classes 13) from a
    TAO-style images.tar.gz, and its ONNX export."""
    from rtdetr_tao.cli import main

    root = tmp_path_factory.mktemp("tao13")
    split = root / "split"
    write_split(split, 4, size=(32, 32), seed=5)
    data = json.loads((split / "annotations.json").read_text())
    ids = {1: 3, 3: 7, 5: 12, 7: 12}
    for ann in data["annotations"]:
        ann["category_id"] = ids[ann["category_id"]]
    data["categories"] = [{"id": cid, "name": name} for cid, name in CATEGORIES.items()]
    (split / "annotations.json").write_text(json.dumps(data))
    layout = build("tao_tar", split, root / "tao")
    source = {"image_dir": layout["image_dir"], "json_file": layout["json_file"]}
    spec = {
        "results_dir": str(root / "results"),
        "model": TINY_MODEL,
        "dataset": {
            "train_data_sources": [source],
            "infer_data_sources": {"image_dir": [layout["image_dir"]]},
            "num_classes": 13,
            "batch_size": 4,
            "workers": 0,
            "cache_dir": str(root / "cache"),
            "augmentation": {"train_spatial_size": [32, 32], "eval_spatial_size": [32, 32], "multi_scales": []},
        },
        "train": {"num_epochs": 1, "device": "cpu", "checkpoint_interval": 1},
        "export": {"input_height": 32, "input_width": 32},
        "inference": {"conf_threshold": 0.0},
    }
    path = root / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert main(["train", "-e", str(path)]) == 0
    ckpt = root / "results" / "train" / "model_epoch_000.pth"
    onnx_file = root / "model.onnx"
    assert main(["export", "-e", str(path), f"export.checkpoint={ckpt}", f"export.onnx_file={onnx_file}"]) == 0
    return {"spec": path, "root": root, "ckpt": ckpt, "onnx": onnx_file}


@pytest.mark.usefixtures("s3_server")
def test_inference_reads_classmap_and_model_from_s3_on_both_clis(tao_numbered, tmp_path, monkeypatch) -> None:
    import boto3
    from rtdetr_deploy.cli import main as deploy_main

    from rtdetr_tao.cli import main
    from rtdetr_tao.outputs.inference import InferenceWriter

    used: list[list[str]] = []
    init = InferenceWriter.__init__
    monkeypatch.setattr(
        InferenceWriter,
        "__init__",
        lambda self, out, names, **kw: used.append(list(names)) or init(self, out, names, **kw),
    )
    client = boto3.client("s3")
    client.create_bucket(Bucket="maps")
    client.put_object(Bucket="maps", Key="classmap.txt", Body=b"box\nround\nthree\n")
    client.upload_file(str(tao_numbered["ckpt"]), "maps", "models/model.pth")
    client.upload_file(str(tao_numbered["onnx"]), "maps", "models/model.onnx")
    spec, classmap = str(tao_numbered["spec"]), "dataset.infer_data_sources.classmap=s3://maps/classmap.txt"
    ckpt = "inference.checkpoint=s3://maps/models/model.pth"  # models come from S3 too
    assert main(["inference", "-e", spec, ckpt, classmap, f"inference.results_dir={tmp_path / 'torch'}"]) == 0
    engine = "inference.trt_engine=s3://maps/models/model.onnx"
    assert deploy_main(["inference", "-e", spec, engine, classmap, f"inference.results_dir={tmp_path / 'onnx'}"]) == 0
    expected = [f"class_{i}" for i in range(13)]
    expected[3], expected[7], expected[12] = "box", "round", "three"
    assert used == [expected, expected]  # label i is category id i; unused ids keep the checkpoint's names
    assert main(["inference", "-e", spec, ckpt, f"inference.results_dir={tmp_path / 'plain'}"]) == 0
    assert [used[-1][i] for i in (3, 7, 12)] == list(CATEGORIES.values())  # no classmap: the checkpoint's names
