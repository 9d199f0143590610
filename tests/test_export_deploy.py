"""Export to ONNX, inference, the Python predictor, and rtdetr-deploy with the ONNX Runtime backend (real ONNX
Runtime, a loopback S3 server); the TensorRT path runs only where TensorRT and a GPU are present."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import yaml
from PIL import Image
from rtdetr_deploy.calibration import CalibrationBatches, CalibrationCache
from rtdetr_deploy.cli import main as deploy_main
from test_data import s3_server  # noqa: F401 - the loopback S3 fixture
from test_train import TINY_MODEL, _check_report

from rtdetr_tao.cli import main
from rtdetr_tao.data.preprocess import load_rgb, to_model_input
from rtdetr_tao.data.synthetic import write_split
from rtdetr_tao.errors import DependencyError
from rtdetr_tao.metadata import read_metadata
from rtdetr_tao.predictor import Predictor

HAS_TRT = importlib.util.find_spec("tensorrt") is not None and torch.cuda.is_available()


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """A tiny model trained for 3 epochs on synthetic shapes, and a spec for the other actions."""
    root = tmp_path_factory.mktemp("export")
    train = write_split(root / "train", 16, size=(64, 64), seed=0)
    val = write_split(root / "val", 6, size=(64, 64), seed=1, archive=True)
    source = lambda split: {"image_dir": str(split.image_dir), "json_file": str(split.json_file)}  # noqa: E731
    spec = {
        "results_dir": str(root / "results"),
        "model": TINY_MODEL,
        "dataset": {
            "train_data_sources": [source(train)],
            "test_data_sources": source(val),
            "infer_data_sources": {"image_dir": [str(train.image_dir)]},
            "num_classes": 4,
            "batch_size": 4,
            "workers": 0,
            "cache_dir": str(root / "cache"),
            "augmentation": {"train_spatial_size": [64, 64], "eval_spatial_size": [64, 64], "multi_scales": []},
        },
        "train": {"num_epochs": 3, "device": "cpu", "seed": 0, "optim": {"warmup_steps": 1, "lr": 0.001}},
        "export": {"input_height": 64, "input_width": 64},
        "inference": {"conf_threshold": 0.0},
    }
    path = root / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert main(["train", "-e", str(path)]) == 0
    return {"spec": path, "root": root, "ckpt": root / "results" / "train" / "model_epoch_002.pth", "val": val}


def _export(trained: dict, name: str, *overrides: str) -> Path:
    onnx_file = trained["root"] / name
    args = [
        "export",
        "-e",
        str(trained["spec"]),
        f"export.checkpoint={trained['ckpt']}",
        f"export.onnx_file={onnx_file}",
    ]
    assert main([*args, *overrides]) == 0
    return onnx_file


def test_export_matches_pytorch_with_dynamic_batch(trained) -> None:
    path = _export(trained, "model.onnx", "export.opset_version=17")
    graph = onnx.load(str(path))
    assert graph.opset_import[0].version == 17
    assert [i.name for i in graph.graph.input] == ["images", "orig_target_sizes"]
    meta = read_metadata(path)
    assert meta.label_to_category == [1, 3, 5, 7] and meta.class_names[1] == "ellipse" and meta.input_size == (64, 64)
    status = [
        json.loads(line) for line in (trained["root"] / "results" / "export" / "status.json").read_text().splitlines()
    ]
    assert status[-1]["kpi"]["onnx_max_abs_diff"] < 1e-3
    predictor = Predictor.from_checkpoint(trained["ckpt"], input_size=(64, 64))
    session = ort.InferenceSession(str(path))
    for batch in (1, 3):
        images = np.random.default_rng(batch).random((batch, 3, 64, 64), dtype=np.float32)
        sizes = np.array([[64, 64]] * batch, dtype=np.float32)
        labels, _, scores = session.run(None, {"images": images, "orig_target_sizes": sizes})
        logits, _ = predictor._run(images)
        order = np.argsort(-logits.reshape(batch, -1), axis=1, kind="stable")[:, : labels.shape[1]]
        np.testing.assert_array_equal(labels, order % logits.shape[-1])
        np.testing.assert_allclose(
            scores, 1 / (1 + np.exp(-np.take_along_axis(logits.reshape(batch, -1), order, 1))), atol=1e-4
        )


def test_raw_export_and_predictor_agree(trained) -> None:
    path = _export(trained, "raw.onnx", "export.raw_outputs=true", "export.batch_size=2")
    assert ort.InferenceSession(str(path)).get_inputs()[0].shape[0] == 2
    torch_pred = Predictor.from_checkpoint(trained["ckpt"], input_size=(64, 64))
    onnx_pred = Predictor.from_onnx(path)
    images = [Image.open(p) for p in sorted((trained["root"] / "..").glob("*/train/images/*.jpg"))[:2]]
    images = images or [Image.new("RGB", (80, 60), "red"), Image.new("RGB", (64, 64), "blue")]
    a, b = torch_pred.predict(images, threshold=0.0), onnx_pred.predict(images, threshold=0.0)
    drawn = a[0].draw(images[0])
    assert drawn.size == images[0].size and drawn.tobytes() != images[0].convert("RGB").tobytes()
    for x, y in zip(a, b, strict=True):
        assert x.names[:10] == y.names[:10]
        np.testing.assert_allclose(x.boxes[:10], y.boxes[:10], atol=1e-2)
        assert set(x.category_ids.tolist()) <= {1, 3, 5, 7}
    converted = a[0].to_supervision()
    assert len(converted) == len(a[0]) > 0
    np.testing.assert_array_equal(converted.xyxy, a[0].boxes.astype(np.float32))
    np.testing.assert_array_equal(converted.confidence, a[0].scores.astype(np.float32))
    assert converted.class_id.tolist() == a[0].category_ids.tolist()
    assert converted.data["class_name"].tolist() == a[0].names
    assert len(converted[converted.confidence > 0.5]) == int((a[0].scores > 0.5).sum())  # sv's own filtering works


def test_supervision_missing_gives_the_install_hint(trained, monkeypatch) -> None:
    detections = Predictor.from_checkpoint(trained["ckpt"], input_size=(64, 64)).predict(
        [Image.new("RGB", (64, 64), "red")], threshold=0.0
    )[0]
    monkeypatch.setitem(sys.modules, "supervision", None)
    with pytest.raises(DependencyError, match=r"pip install 'rtdetr-tao\[supervision\]'"):
        detections.to_supervision()


def test_evaluate_pytorch_and_deploy_onnx_agree_local_and_s3(trained, s3_server) -> None:  # noqa: F811
    import boto3

    path = _export(trained, "eval.onnx")
    spec = str(trained["spec"])
    assert main(["evaluate", "-e", spec, f"evaluate.checkpoint={trained['ckpt']}"]) == 0
    ours = json.loads((trained["root"] / "results" / "evaluate" / "results.json").read_text())
    assert deploy_main(["evaluate", "-e", spec, f"evaluate.trt_engine={path}"]) == 0
    deployed = json.loads((trained["root"] / "results" / "deploy_evaluate" / "results.json").read_text())
    for key in ("AP", "AP50", "AP75", "AR100"):
        assert abs(ours[key] - deployed[key]) < 1e-3, key
    for action in ("evaluate", "deploy_evaluate"):
        _check_report(trained["root"] / "results" / action / "report")
    # the tiny model scores ~0 AP, so compare the detections themselves: PyTorch eval loader vs deploy pipeline
    from rtdetr_tao.config import load_spec
    from rtdetr_tao.data.loader import build_eval_loader
    from rtdetr_tao.engine.predict import predict
    from rtdetr_tao.engine.restore import load_trained_model
    from rtdetr_tao.runtime.backends import open_backend
    from rtdetr_tao.runtime.detect import detect

    loaded = load_spec(spec, []).spec
    model = load_trained_model(str(trained["ckpt"]), loaded, eval_spatial_size=(64, 64))
    loader, coco = build_eval_loader(loaded.dataset, "test", category_map=model.category_map)
    torch_dets = {d.image_id: d for d in predict(model.model, loader, torch.device("cpu"), num_select=20)[0]}
    image_dir = Path(loader.dataset.records[0].path).parent
    items = [(i, image_dir / coco.imgs[i]["file_name"]) for i in sorted(coco.getImgIds())]
    for _, found, _ in detect(open_backend(path), items, batch_size=4):
        expected = torch_dets[found.image_id]
        np.testing.assert_array_equal(found.labels[:5], expected.labels[:5])
        np.testing.assert_allclose(found.boxes[:5], expected.boxes[:5], atol=1e-2)
        np.testing.assert_allclose(found.scores, expected.scores, atol=1e-4)

    client = boto3.client("s3")
    client.create_bucket(Bucket="val")
    client.upload_file(str(trained["val"].image_dir), "val", "images.tar.gz")
    client.upload_file(str(trained["val"].json_file), "val", "annotations.json")
    s3 = "dataset.test_data_sources={image_dir: s3://val/images.tar.gz, json_file: s3://val/annotations.json}"
    out = trained["root"] / "s3eval"
    assert deploy_main(["evaluate", "-e", spec, s3, f"evaluate.trt_engine={path}", f"evaluate.results_dir={out}"]) == 0
    assert abs(json.loads((out / "results.json").read_text())["AP"] - ours["AP"]) < 1e-3


def test_inference_pytorch_and_onnx_write_the_same_files(trained) -> None:
    path = _export(trained, "infer.onnx")
    spec = str(trained["spec"])
    torch_out, onnx_out = trained["root"] / "inf_torch", trained["root"] / "inf_onnx"
    assert (
        main(["inference", "-e", spec, f"inference.checkpoint={trained['ckpt']}", f"inference.results_dir={torch_out}"])
        == 0
    )
    classmap = trained["root"] / "classmap.txt"
    classmap.write_text("rectangle\nellipse\ntriangle\ncross\n")
    assert deploy_main([
        "inference", "-e", spec, f"inference.trt_engine={path}", f"inference.results_dir={onnx_out}",
        f"dataset.infer_data_sources.classmap={classmap}",
    ]) == 0  # fmt: skip
    names = sorted(p.name for p in (torch_out / "labels").iterdir())
    assert len(names) == 16 and names == sorted(p.name for p in (onnx_out / "labels").iterdir())
    assert len(list((torch_out / "images_annotated").iterdir())) == 16
    first_torch = (torch_out / "labels" / names[0]).read_text().splitlines()[0].split()
    first_onnx = (onnx_out / "labels" / names[0]).read_text().splitlines()[0].split()
    assert first_torch[0] == first_onnx[0]  # same class name: the classmap is read in label order on both paths
    np.testing.assert_allclose([float(v) for v in first_torch[4:8]], [float(v) for v in first_onnx[4:8]], atol=0.05)
    results = json.loads((torch_out / "results.json").read_text())
    assert {r["category_id"] for r in results} <= {1, 3, 5, 7}


def test_inference_reports_a_corrupt_image_and_goes_on(trained, tmp_path, caplog) -> None:
    images = tmp_path / "images"
    shutil.copytree(next(iter((trained["root"]).glob("train/images"))), images)
    (images / "000003.jpg").write_bytes(b"broken")
    spec, source = str(trained["spec"]), f"dataset.infer_data_sources={{image_dir: [{images}]}}"
    onnx_file = _export(trained, "corrupt.onnx")
    for run, model, key in ((main, trained["ckpt"], "checkpoint"), (deploy_main, onnx_file, "trt_engine")):
        out = tmp_path / key
        assert run(["inference", "-e", spec, source, f"inference.{key}={model}", f"inference.results_dir={out}"]) == 0
        assert len(list((out / "labels").iterdir())) == 15
        assert "000003.jpg" in caplog.text


def test_calibration_uses_the_training_preprocessing_and_caches(tmp_path, trained) -> None:
    images = sorted(Path(p) for p in (trained["root"]).glob("train/images/*.jpg"))
    batches = CalibrationBatches(
        images, lambda p: to_model_input(load_rgb(p), (64, 64))[0], batch_size=3, num_batches=9
    )
    assert len(batches) == 5 and batches.num_images == 15  # 16 images: 5 full batches of 3
    first = next(iter(batches))
    assert first.shape == (3, 3, 64, 64) and first.dtype == np.float32 and first.min() >= 0 and first.max() <= 1
    expected = np.asarray(load_rgb(images[0]).resize((64, 64), Image.BILINEAR), dtype=np.float32) / 255
    np.testing.assert_allclose(first[0], expected.transpose(2, 0, 1), atol=1e-6)  # [0, 1], no mean/std
    cache = CalibrationCache(tmp_path / "cal.bin")
    assert cache.read() is None
    cache.write(b"calibration table")
    assert CalibrationCache(tmp_path / "cal.bin").read() == b"calibration table"


@pytest.mark.skipif(HAS_TRT, reason="checks the message shown where TensorRT is missing")
def test_gen_trt_engine_without_tensorrt_is_a_clear_error(trained, capsys) -> None:
    path = _export(trained, "trt.onnx")
    code = deploy_main(["gen_trt_engine", "-e", str(trained["spec"]), f"gen_trt_engine.onnx_file={path}",
                        f"gen_trt_engine.trt_engine={trained['root'] / 'm.engine'}"])  # fmt: skip
    assert code == 2 and "pip install 'rtdetr-tao[trt]'" in capsys.readouterr().err


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_TRT, reason="needs TensorRT and an NVIDIA GPU")
def test_tensorrt_engine_matches_onnx_runtime(trained) -> None:
    path = _export(trained, "gpu.onnx")
    engine = trained["root"] / "model.engine"
    spec = str(trained["spec"])
    assert (
        deploy_main(
            ["gen_trt_engine", "-e", spec, f"gen_trt_engine.onnx_file={path}", f"gen_trt_engine.trt_engine={engine}"]
        )
        == 0
    )
    out = trained["root"] / "trt_eval"
    assert deploy_main(["evaluate", "-e", spec, f"evaluate.trt_engine={engine}", f"evaluate.results_dir={out}"]) == 0
    onnx_out = trained["root"] / "onnx_eval"
    assert deploy_main(["evaluate", "-e", spec, f"evaluate.trt_engine={path}", f"evaluate.results_dir={onnx_out}"]) == 0
    a, b = (json.loads((d / "results.json").read_text())["AP"] for d in (out, onnx_out))
    assert abs(a - b) < 1e-3
    shutil.rmtree(out)


def test_export_errors(trained, capsys) -> None:
    out = f"export.onnx_file={trained['root'] / 'x.onnx'}"
    assert main(["export", "-e", str(trained["spec"]), "export.checkpoint=/nope.pth", out]) == 2
    assert "/nope.pth does not exist" in capsys.readouterr().err
    assert (
        main(
            ["export", "-e", str(trained["spec"]), f"export.checkpoint={trained['ckpt']}", out, "export.input_width=70"]
        )
        == 2
    )
    assert "multiples of 32" in capsys.readouterr().err


@pytest.mark.parametrize("opset", [16, 19])
def test_discrete_export_has_no_grid_sample(trained, opset) -> None:
    path = _export(
        trained, f"discrete{opset}.onnx", "model.cross_attn_method=discrete", f"export.opset_version={opset}"
    )
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    ops = {node.op_type for node in model.graph.node}
    assert "GridSample" not in ops and "GatherElements" in ops
    default = onnx.load(str(_export(trained, f"default{opset}.onnx", f"export.opset_version={opset}")))
    assert "GridSample" in {node.op_type for node in default.graph.node}
    session = ort.InferenceSession(str(path))
    images = np.random.default_rng(0).random((4, 3, 64, 64), dtype=np.float32)
    labels, boxes, scores = session.run(None, {"images": images, "orig_target_sizes": np.full((4, 2), 64, np.float32)})
    assert labels.shape == (4, 20) and np.isfinite(boxes).all() and ((scores >= 0) & (scores <= 1)).all()
