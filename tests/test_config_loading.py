"""Spec loading: YAML, dotted overrides, references, ??? placeholders, strictness and error messages."""

from __future__ import annotations

import pydantic
import pytest

from rtdetr_tao.config import ExperimentSpec, load_spec
from rtdetr_tao.errors import SpecError


def write(tmp_path, text: str, name: str = "spec.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults_follow_tao(tmp_path):
    spec = load_spec(write(tmp_path, "")).spec
    assert spec.model.backbone == "resnet_50" and spec.model.num_queries == 300 and spec.model.dec_layers == 6
    assert spec.dataset.num_classes == 80 and spec.dataset.batch_size == 4
    assert spec.train.optim.lr == 1e-4 and spec.train.optim.lr_steps == [1000]
    assert spec.train.precision == "fp32" and spec.train.checkpoint_interval == 1
    assert spec.export.opset_version == 17 and (spec.export.input_height, spec.export.input_width) == (640, 640)
    assert spec.gen_trt_engine.tensorrt.max_batch_size == 4 and spec.gen_trt_engine.tensorrt.workspace_size == 1024


def test_overrides_parse_yaml_values_and_create_sections(tmp_path):
    spec = load_spec(
        write(tmp_path, "train:\n  num_epochs: 3\n"),
        [
            "train.num_epochs=10",
            "train.optim.lr=2e-4",
            "train.gpu_ids=[0]",
            "dataset.num_classes=5",
            "dataset.train_data_sources=[{image_dir: s3://b/train/images.tar.gz, json_file: s3://b/train/a.json}]",
            "+model.num_points=[3, 6, 3]",
        ],
    ).spec
    assert spec.train.num_epochs == 10 and spec.train.optim.lr == 2e-4
    assert spec.dataset.train_data_sources[0].image_dir == "s3://b/train/images.tar.gz"
    assert spec.model.points_per_level == [3, 6, 3]


def test_override_list_index_and_delete(tmp_path):
    path = write(
        tmp_path,
        "dataset:\n  train_data_sources:\n  - {image_dir: /a, json_file: /a.json}\n"
        "  - {image_dir: /b, json_file: /b.json}\ntrain:\n  num_epochs: 7\n",
    )
    spec = load_spec(path, ["dataset.train_data_sources.1.image_dir=/c", "~train.num_epochs"]).spec
    assert [s.image_dir for s in spec.dataset.train_data_sources] == ["/a", "/c"]
    assert spec.train.num_epochs == 10  # deleted: back to the default
    with pytest.raises(SpecError, match="list index '5' is out of range"):
        load_spec(path, ["dataset.train_data_sources.5.image_dir=/c"])


def test_references_resolve_against_spec_and_defaults(tmp_path):
    path = write(
        tmp_path, "results_dir: /r\nquantize:\n  results_dir: ${results_dir}/q\nexport:\n  onnx_file: ${results_dir}\n"
    )
    spec = load_spec(path).spec
    assert spec.quantize.results_dir == "/r/q" and spec.export.onnx_file == "/r"
    assert load_spec(None, ["export.onnx_file=m${dataset.num_classes}.onnx"]).spec.export.onnx_file == "m80.onnx"
    with pytest.raises(SpecError, match="unknown key"):
        load_spec(None, ["export.onnx_file=${nope.nothing}"])


def test_missing_placeholder_is_required_only_where_the_action_needs_it(tmp_path):
    path = write(tmp_path, "evaluate:\n  checkpoint: ???\nmodel:\n  pretrained_backbone_path: ???\n")
    loaded = load_spec(
        path, ["dataset.test_data_sources={image_dir: /i, json_file: /j}", "evaluate.checkpoint=/c"], action="evaluate"
    )
    assert loaded.spec.model.pretrained_backbone_path is None
    assert any("model.pretrained_backbone_path" in w for w in loaded.warnings)
    with pytest.raises(SpecError) as err:
        load_spec(path, ["dataset.test_data_sources={image_dir: /i, json_file: /j}"], action="evaluate")
    assert "evaluate.checkpoint is required by evaluate but it is '???'" in str(err.value)


def test_presets_fill_only_unset_keys():
    small = load_spec(None, ["model.preset=s"]).spec.model
    assert (small.backbone, small.dec_layers, small.expansion, small.freeze_at, small.freeze_norm) == (
        "resnet_18",
        3,
        0.5,
        -1,
        False,
    )
    assert load_spec(None, ["model.preset=s", "model.dec_layers=4"]).spec.model.dec_layers == 4
    x = load_spec(None, ["model.preset=x"]).spec.model
    assert x.encoder_width == 384 and x.dim_feedforward == 2048 and x.hidden_dim == 256
    m_star = load_spec(None, ["model.preset=m_star"]).spec.model
    assert m_star.eval_idx == 2 and m_star.expansion == 0.5 and m_star.backbone == "resnet_50"


def test_spec_is_frozen():
    spec = ExperimentSpec()
    with pytest.raises(pydantic.ValidationError):
        spec.train.num_epochs = 3


def test_derived_values():
    assert load_spec(None, ["model.backbone=resnet_18"]).spec.lr_backbone == 1e-4
    assert load_spec(None, ["model.backbone=resnet_101"]).spec.lr_backbone == 1e-6
    assert load_spec(None, ["model.backbone=resnet_18", "train.optim.lr_backbone=3e-5"]).spec.lr_backbone == 3e-5
    assert load_spec(None, ["model.clip_max_norm=0.5"]).spec.clip_grad_norm == 0.5
    assert load_spec(None, ["train.num_epochs=72"]).spec.aug_stop_epoch == 70
    spec = load_spec(None, ["results_dir=/r", "export.results_dir=/e"]).spec
    assert spec.action_dir("train") == "/r/train" and spec.action_dir("export") == "/e"
    assert spec.action_dir("deploy_evaluate") == "/r/deploy_evaluate"


@pytest.mark.parametrize(
    ("text", "overrides", "expected"),
    [
        ("train:\n  num_epoch: 3\n", [], "unknown key 'train.num_epoch' (did you mean 'train.num_epochs'?)"),
        ("", ["train.optim.lrr=0.1"], "override 'train.optim.lrr=0.1': unknown key 'train.optim.lrr' (did you mean"),
        ("trian:\n  num_epochs: 3\n", [], "unknown key 'trian' (did you mean 'train'?)"),
        ("train:\n  num_epochs: ten\n", [], "train.num_epochs: Input should be a valid integer"),
        ("train:\n  optim:\n    lr: 5.0\n", [], "train.optim.lr: Input should be less than or equal to 1 (got 5.0)"),
        ("train:\n  precision: fp64\n", [], "train.precision: Input should be 'fp32', 'fp16' or 'bf16' (got 'fp64')"),
        ("model:\n  backbone: fan_medium\n", [], "model.backbone: 'fan_medium': unknown backbone; use one of"),
        ("model:\n  num_points: [4, 4]\n", [], "model.num_points [4, 4] needs one entry per feature level"),
        ("dataset:\n  augmentation:\n    eval_spatial_size: [600, 640]\n", [], "multiples of 32"),
        ("train:\n  num_gpus: 2\n  gpu_ids: [0]\n", [], "train.gpu_ids [0] must list num_gpus=2 devices"),
        ("train:\n  num_epochs: 3\n   bad: [\n", [], "invalid YAML at line 3"),
        ("- a\n- b\n", [], "the top level must be a mapping"),
        ("", ["train.num_epochs"], "is not of the form key=value"),
        ("", ["dataset.train_data_sources=[{image_dir: /x}]"], "dataset.train_data_sources[0].json_file is missing"),
    ],
)
def test_errors_name_the_key_and_fit_on_one_line(tmp_path, text, overrides, expected):
    with pytest.raises(SpecError) as err:
        load_spec(write(tmp_path, text), overrides)
    message = str(err.value)
    assert expected in message
    assert "\n" not in message


def test_several_problems_are_reported_together(tmp_path):
    with pytest.raises(SpecError) as err:
        load_spec(write(tmp_path, "train:\n  num_epoch: 3\n  optim:\n    lr: 2\n"))
    assert "2 problems" in str(err.value) and "num_epoch" in str(err.value) and "train.optim.lr" in str(err.value)


def test_missing_file_error_names_it(tmp_path):
    with pytest.raises(SpecError, match="spec file not found: .*nope.yaml"):
        load_spec(tmp_path / "nope.yaml")


def test_action_rules(tmp_path):
    sources = "dataset.train_data_sources=[{image_dir: /i, json_file: /j}]"
    with pytest.raises(SpecError, match="dataset.batch_size=-1 is only for evaluate, inference and deploy"):
        load_spec(None, [sources, "dataset.batch_size=-1"], action="train")
    with pytest.raises(SpecError, match="no 'distill' section"):
        load_spec(None, [sources], action="distill")
    with pytest.raises(SpecError, match="an IOU binding needs the same feature list"):
        load_spec(None, ["distill.bindings=[{student_module_name: srcs, teacher_module_name: dsrcs, criterion: iou}]"])


def test_aliases_normalise():
    spec = load_spec(
        None,
        [
            "gen_trt_engine.tensorrt.data_type=int8",
            "quantize.backend=modelopt.pytorch",
            "quantize.algorithm=minmax",
            "quantize.layers=[{module_name: '*', weights: {dtype: float8_e4m3fn},"
            " activations: {dtype: float8_e4m3fn}}]",
            "model.backbone_names=[backbone.0]",
            "distill.bindings=[{student_module_name: srcs, teacher_module_name: srcs, criterion: iou, weight: 20}]",
        ],
    ).spec
    assert spec.gen_trt_engine.tensorrt.data_type == "INT8"
    assert spec.quantize.backend == "modelopt" and spec.quantize.algorithm == "max"
    assert spec.quantize.layers[0].weights.dtype == "fp8_e4m3fn"
    assert spec.model.backbone_names == ["backbone"]
    assert spec.distill.bindings[0].criterion == "IOU" and spec.distill.bindings[0].weight == 20


@pytest.mark.parametrize("action", ["evaluate", "inference", "deploy_evaluate", "deploy_inference"])
def test_one_rule_for_batch_size_minus_one(action):
    section = {"deploy_evaluate": "evaluate", "deploy_inference": "inference"}.get(action, action)
    batch = lambda *o: load_spec(None, list(o)).spec.batch_size_for(action)  # noqa: E731
    assert batch("dataset.batch_size=-1") == 4  # the action's -1 and the dataset's -1: the default
    assert batch("dataset.batch_size=6") == 6  # the action's -1: the dataset's
    assert batch("dataset.batch_size=-1", f"{section}.batch_size=3") == 3
    assert batch("dataset.batch_size=6", f"{section}.batch_size=3") == 3


def test_batch_size_of_training_type_actions_is_the_dataset_one():
    spec = load_spec(None, ["dataset.batch_size=6", "evaluate.batch_size=2"]).spec
    assert spec.batch_size_for("quantize") == spec.batch_size_for("train") == 6
