"""TAO compatibility: TAO's own spec files and the orchestrator overrides of the TAO seed document."""

from __future__ import annotations

import pytest
import torch

from rtdetr_tao.config import load_spec
from rtdetr_tao.config.backbones import BACKBONES
from rtdetr_tao.model.build import build_model

S3_TRAIN = "s3://bucket/data/train"
S3_EVAL = "s3://bucket/data/eval"
TRAIN_SOURCES = (
    f"dataset.train_data_sources=[{{image_dir: {S3_TRAIN}/images.tar.gz, json_file: {S3_TRAIN}/annotations.json}}]"
)
VAL_SOURCES = f"dataset.val_data_sources={{image_dir: {S3_EVAL}/images.tar.gz, json_file: {S3_EVAL}/annotations.json}}"
TEST_SOURCES = (
    f"dataset.test_data_sources={{image_dir: {S3_EVAL}/images.tar.gz, json_file: {S3_EVAL}/annotations.json}}"
)
INFER_SOURCES = (
    f"dataset.infer_data_sources={{image_dir: [{S3_EVAL}/images.tar.gz], classmap: {S3_EVAL}/label_map.txt}}"
)
CALIB_SOURCES = (
    f"dataset.quant_calibration_data_sources={{image_dir: {S3_TRAIN}/images.tar.gz, "
    f"json_file: {S3_TRAIN}/annotations.json}}"
)
CHECKPOINT = "/results/train_job/results_dir/model_epoch_000.pth"
ONNX_FILE = "/results/export_job/results_dir/rtdetr.onnx"

# Each TAO reference spec (backbone fan_small) with only its data paths ("???" paths included) overridden.
TAO_SPECS = {
    "train.yaml": ("train", [TRAIN_SOURCES, VAL_SOURCES, "model.pretrained_backbone_path=/ptm/fan.pth"]),
    "train_rectangle.yaml": ("train", [TRAIN_SOURCES, VAL_SOURCES, "model.pretrained_backbone_path=/ptm/r50.pth"]),
    "evaluate.yaml": ("evaluate", [TEST_SOURCES, f"evaluate.checkpoint={CHECKPOINT}"]),
    "export.yaml": ("export", [f"export.checkpoint={CHECKPOINT}", f"export.onnx_file={ONNX_FILE}"]),
    "inference.yaml": ("inference", [INFER_SOURCES, f"inference.checkpoint={CHECKPOINT}"]),
    # quantize.yaml's `num_classes: ??` is a plain string placeholder (not TAO's ???), so it needs a value too.
    "quantize.yaml": ("quantize", [CALIB_SOURCES, f"quantize.model_path={CHECKPOINT}", "dataset.num_classes=80"]),
    "distill.yaml": (
        "distill",
        [
            "model.backbone=resnet_18",
            "distill.teacher.backbone=resnet_50",
            "model.pretrained_backbone_path=/ptm/r18.pth",
            f"distill.pretrained_teacher_model_path={CHECKPOINT}",
        ],
    ),
    "deploy_gen_trt_engine.yaml": (
        "gen_trt_engine",
        [
            "model.pretrained_backbone_path=/ptm/fan.pth",
            f"gen_trt_engine.onnx_file={ONNX_FILE}",
            "gen_trt_engine.trt_engine=/results/model.engine",
            "gen_trt_engine.tensorrt.calibration.cal_image_dir=[/cal]",
            "gen_trt_engine.tensorrt.calibration.cal_cache_file=/results/cal.bin",
        ],
    ),
    "deploy_evaluate.yaml": ("deploy_evaluate", [TEST_SOURCES, "evaluate.trt_engine=/results/model.engine"]),
    "deploy_infer.yaml": ("deploy_inference", [INFER_SOURCES, "inference.trt_engine=/results/model.engine"]),
}


def test_every_reference_spec_is_covered(tao_specs_dir):
    assert sorted(p.name for p in tao_specs_dir.glob("*.yaml")) == sorted(TAO_SPECS)


@pytest.mark.parametrize("backbone", [b for b in BACKBONES if BACKBONES[b].family != "hgnetv2"])
def test_tao_train_spec_takes_each_tao_backbone(tao_specs_dir, backbone):
    overrides = [TRAIN_SOURCES, VAL_SOURCES, f"model.backbone={backbone}", "model.pretrained_backbone_path=/ptm/b.pth"]
    assert load_spec(tao_specs_dir / "train.yaml", overrides, action="train").spec.model.backbone == backbone


def test_tao_train_spec_builds_its_fan_small_detector(tao_specs_dir):
    """TAO's train.yaml as it is (model.backbone fan_small, return_interm_indices [1, 2, 3]) builds the detector with
    FAN-small's stride-8/16/32 maps (256 / 384 / 768 channels) feeding the encoder."""
    action, overrides = TAO_SPECS["train.yaml"]
    spec = load_spec(tao_specs_dir / "train.yaml", overrides, action=action).spec
    model_spec = spec.model.model_copy(update={"pretrained_backbone_path": None})  # /ptm/fan.pth does not exist
    with torch.device("meta"):
        model = build_model(model_spec, spec.dataset.num_classes)
    assert spec.model.backbone == "fan_small"
    assert (model.backbone.out_channels, model.backbone.out_strides) == ([256, 384, 768], [8, 16, 32])
    assert [proj.conv.in_channels for proj in model.encoder.input_proj] == [256, 384, 768]


@pytest.mark.parametrize("name", sorted(TAO_SPECS))
def test_tao_reference_spec_validates(tao_specs_dir, name):
    action, overrides = TAO_SPECS[name]
    spec = load_spec(tao_specs_dir / name, overrides, action=action).spec
    if name == "train_rectangle.yaml":
        assert spec.dataset.augmentation.train_spatial_size == [544, 960]
        assert spec.dataset.augmentation.multi_scales[0] == [480, 832]
    if name == "distill.yaml":
        assert spec.distill.bindings[0].criterion == "IOU" and spec.distill.bindings[0].weight == 20
        assert spec.train.device_ids == [0, 1, 2, 3]  # num_gpus: 4 without gpu_ids
    if name == "deploy_gen_trt_engine.yaml":
        assert spec.gen_trt_engine.tensorrt.data_type == "INT8"
        assert spec.gen_trt_engine.tensorrt.calibration.cal_batches == 1000
    if name == "quantize.yaml":
        assert spec.quantize.layers[0].weights.dtype == "fp8_e4m3fn"
        # results_dir is '???', so ${results_dir} is missing too: both fall back to their defaults.
        assert spec.quantize.results_dir is None and spec.action_dir("quantize") == "results/quantize"


# The seed document's per-action override sets, with "<num_classes> + 1" filled in for a 4-class dataset.
SEED_OVERRIDES = {
    "train": {
        "train.num_epochs": 10,
        "train.checkpoint_interval": 10,
        "train.validation_interval": 10,
        "train.num_gpus": 1,
        "train.gpu_ids": [0],
        "dataset.num_classes": 5,
        "dataset.train_data_sources": [
            {"image_dir": f"{S3_TRAIN}/images.tar.gz", "json_file": f"{S3_TRAIN}/annotations.json"}
        ],
        "dataset.val_data_sources": {
            "image_dir": f"{S3_EVAL}/images.tar.gz",
            "json_file": f"{S3_EVAL}/annotations.json",
        },
    },
    "resume": {
        "train.num_epochs": 11,
        "train.resume_training_checkpoint_path": CHECKPOINT,
        "dataset.num_classes": 5,
        "dataset.eval_class_ids": [1, 2, 3, 4],
        "dataset.train_data_sources": [
            {"image_dir": f"{S3_TRAIN}/images.tar.gz", "json_file": f"{S3_TRAIN}/annotations.json"}
        ],
        "dataset.val_data_sources": {
            "image_dir": f"{S3_EVAL}/images.tar.gz",
            "json_file": f"{S3_EVAL}/annotations.json",
        },
    },
    "evaluate": {
        "dataset.num_classes": 5,
        "dataset.eval_class_ids": [1, 2, 3, 4],
        "dataset.test_data_sources": {
            "image_dir": f"{S3_EVAL}/images.tar.gz",
            "json_file": f"{S3_EVAL}/annotations.json",
        },
        "evaluate.checkpoint": CHECKPOINT,
    },
    "export": {
        "dataset.num_classes": 5,
        "export.checkpoint": CHECKPOINT,
        "export.onnx_file": ONNX_FILE,
        "export.input_height": 640,
        "export.input_width": 640,
    },
    "quantize": {
        "dataset.num_classes": 5,
        "quantize.layers": [
            {"module_name": "*", "weights": {"dtype": "float8_e4m3fn"}, "activations": {"dtype": "float8_e4m3fn"}}
        ],
        "dataset.train_data_sources": [
            {"image_dir": f"{S3_TRAIN}/images.tar.gz", "json_file": f"{S3_TRAIN}/annotations.json"}
        ],
        "dataset.val_data_sources": {
            "image_dir": f"{S3_EVAL}/images.tar.gz",
            "json_file": f"{S3_EVAL}/annotations.json",
        },
        "dataset.quant_calibration_data_sources": {
            "image_dir": f"{S3_TRAIN}/images.tar.gz",
            "json_file": f"{S3_TRAIN}/annotations.json",
        },
        "quantize.model_path": CHECKPOINT,
    },
    "inference": {
        "dataset.num_classes": 5,
        "dataset.infer_data_sources": {
            "image_dir": [f"{S3_EVAL}/images.tar.gz"],
            "classmap": f"{S3_EVAL}/label_map.txt",
        },
        "inference.checkpoint": CHECKPOINT,
    },
    "distill": {
        "dataset.train_data_sources": [
            {"image_dir": f"{S3_TRAIN}/images.tar.gz", "json_file": f"{S3_TRAIN}/annotations.json"}
        ],
        "dataset.val_data_sources": {
            "image_dir": f"{S3_EVAL}/images.tar.gz",
            "json_file": f"{S3_EVAL}/annotations.json",
        },
        "distill.pretrained_teacher_model_path": CHECKPOINT,
    },
}
SEED_ACTIONS = {"resume": "train"}


def as_overrides(values: dict) -> list[str]:
    """How an orchestrator passes a JSON override dict on the command line: key=<JSON value>."""
    import json

    return [f"{key}={json.dumps(value)}" for key, value in values.items()]


@pytest.mark.parametrize("name", sorted(SEED_OVERRIDES))
def test_seed_override_sets_apply_cleanly(repo_root, name):
    """The orchestrator applies these to the packaged spec template of the action."""
    action = SEED_ACTIONS.get(name, name)
    template = repo_root / "spec_templates" / f"spec_template_{action}.yaml"
    spec = load_spec(template, as_overrides(SEED_OVERRIDES[name]), action=action).spec
    expected = {**SEED_OVERRIDES[name]}
    if "quantize.layers" in expected:  # float8_e4m3fn is normalised to TAO's fp8_e4m3fn
        expected["quantize.layers"] = [
            {
                "module_name": "*",
                "weights": {"dtype": "fp8_e4m3fn", "quant_axis": None},
                "activations": {"dtype": "fp8_e4m3fn", "quant_axis": None},
            }
        ]
    dumped = spec.model_dump(mode="json")
    for key, value in expected.items():
        got = dumped
        for part in key.split("."):
            got = got[part]
        if isinstance(value, dict):
            got = {k: got[k] for k in value}
        if isinstance(value, list) and value and isinstance(value[0], dict) and key != "quantize.layers":
            got = [{k: item[k] for k in value[0]} for item in got]
        assert got == value, key
