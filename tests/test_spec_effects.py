"""Every leaf key of every action's schema does something, or is declared compatibility-only.

The keys come from the generated schema, so a new key cannot escape: it needs a line in PROBES (a non-default
value and the aspect of a job that value must change) or an entry in ``COMPATIBILITY_ONLY``. Aspects are cheap
observations of what the actions really build: the trainer the train action hands its loop to (optimizer groups,
schedule, hooks, loader batches, model flags), the model and loss built from ``model.*``, the arguments the
TensorRT builder and ModelOpt receive, the ONNX graph, the files evaluate and inference write, AutoML's trials.
Nothing trains: the train and distill actions run up to ``Trainer.train``, which is replaced by a recorder.

To cover a new key, add one line to PROBES, e.g. ``"train.recipe": P("deim", "schedule")``; ``given`` holds keys set
on both sides (the context in which the key acts, e.g. INT8 for the calibration keys).
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import tarfile
from collections.abc import Iterator
from contextlib import nullcontext, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from test_train import TINY_MODEL

from rtdetr_tao.config import ExperimentSpec, load_spec
from rtdetr_tao.config.compat import COMPATIBILITY_ONLY
from rtdetr_tao.config.schema import base_schema
from rtdetr_tao.data.synthetic import write_split, write_video
from rtdetr_tao.errors import RTDETRError


@dataclass(frozen=True)
class P:
    """A probe: set the key to ``value`` (``given`` set on both sides, ``also`` with it: keys that must change
    together) and ``aspect`` must change."""

    value: Any
    aspect: str
    given: tuple[tuple[str, Any], ...] = ()
    also: tuple[tuple[str, Any], ...] = ()


INT8 = (("gen_trt_engine.tensorrt.data_type", "INT8"),)
CAL = (*INT8, ("gen_trt_engine.tensorrt.calibration.cal_image_dir", ["{val_images}"]))
QUANT = (("quantize.default_layer_dtype", "int8"), ("quantize.default_activation_dtype", "int8"))
HAS_WANDB = (("wandb.enable", True),)
HAS_CLEARML = (("clearml.enable", True),)
STEP_LR = (("train.optim.lr_scheduler", "StepLR"),)
SGD = (("train.optim.optimizer", "SGD"),)
EMA = (("train.enable_ema", True),)
PATIENCE = (("train.early_stopping_patience", 2),)
HYPERBAND = (("automl.algorithm", "hyperband"),)
TWO_LEVELS = (
    ("model.return_interm_indices", [2, 3]),
    ("model.feat_strides", [16, 32]),
    ("model.feat_channels", [32, 32]),
    ("model.use_encoder_idx", [1]),
)
QUANT_CAL = (*QUANT, ("quantize.calibration_batches", 2))
DEIM = (("train.recipe", "deim"),)
FLAT_COSINE = (("train.optim.lr_scheduler", "FlatCosine"),)
MAL = (("model.loss_types", ["mal", "boxes"]),)

PROBES: dict[str, P] = {
    "results_dir": P("{tmp}/elsewhere", "dirs"),
    # --- wandb: what reaches wandb.init ---
    "wandb.enable": P(True, "hooks"),
    "wandb.project": P("other", "hooks", HAS_WANDB),
    "wandb.entity": P("team", "hooks", HAS_WANDB),
    "wandb.group": P("g", "hooks", HAS_WANDB),
    "wandb.tags": P(["x"], "hooks", HAS_WANDB),
    "wandb.reinit": P(True, "hooks", HAS_WANDB),
    "wandb.sync_tensorboard": P(True, "hooks", HAS_WANDB),
    "wandb.save_code": P(True, "hooks", HAS_WANDB),
    "wandb.name": P("run", "hooks", HAS_WANDB),
    "wandb.run_id": P("abc123", "hooks", HAS_WANDB),
    # --- clearml: what reaches Task.init ---
    "clearml.enable": P(True, "hooks"),
    "clearml.project": P("other", "hooks", HAS_CLEARML),
    "clearml.task": P("other", "hooks", HAS_CLEARML),
    "clearml.deferred_init": P(True, "hooks", HAS_CLEARML),
    "clearml.reuse_last_task_id": P(True, "hooks", HAS_CLEARML),
    "clearml.continue_last_task": P(True, "hooks", HAS_CLEARML),
    "clearml.tags": P(["x"], "hooks", HAS_CLEARML),
    # --- model: the built network and its loss ---
    "model.preset": P("m", "net"),
    "model.pretrained_backbone_path": P("{backbone_weights}", "net"),
    "model.backbone": P("resnet_34", "net"),
    "model.train_backbone": P(False, "model"),
    "model.freeze_at": P(2, "net"),
    "model.freeze_norm": P(True, "net"),
    "model.load_teacher_enc_dec": P(True, "student"),
    "model.num_queries": P(30, "net"),
    "model.num_select": P(5, "eval_results"),
    "model.num_feature_levels": P(4, "net"),
    "model.return_interm_indices": P([2, 3], "net", also=TWO_LEVELS),
    "model.feat_strides": P([16, 32], "net", also=TWO_LEVELS),
    "model.feat_channels": P([64, 64, 64], "net", also=(("model.enc_hidden_dim", 64),)),
    "model.use_encoder_idx": P([1], "net"),
    "model.hidden_dim": P(64, "net"),
    "model.enc_hidden_dim": P(64, "net", also=(("model.feat_channels", [64, 64, 64]),)),
    "model.nheads": P(8, "net"),
    "model.dropout_ratio": P(0.5, "net"),
    "model.enc_layers": P(2, "net"),
    "model.dim_feedforward": P(32, "net"),
    "model.dec_dim_feedforward": P(32, "net"),
    "model.pe_temperature": P(100, "net"),
    "model.expansion": P(1.0, "net"),
    "model.depth_mult": P(0.5, "net"),
    "model.enc_act": P("relu", "net"),
    "model.act": P("relu", "net"),
    "model.dec_layers": P(2, "net"),
    "model.dn_number": P(8, "net"),
    "model.label_noise_ratio": P(1.0, "net"),
    "model.box_noise_scale": P(0.3, "net"),
    "model.eval_idx": P(0, "net"),
    "model.num_points": P(2, "net"),
    "model.cross_attn_method": P("discrete", "net"),
    "model.query_select_method": P("agnostic", "net"),
    "model.vfl_loss_coef": P(2.0, "net"),
    "model.bbox_loss_coef": P(1.0, "net"),
    "model.giou_loss_coef": P(1.0, "net"),
    "model.class_cost": P(0.5, "net"),
    "model.bbox_cost": P(0.5, "net"),
    "model.giou_cost": P(0.5, "net"),
    "model.alpha": P(0.5, "net"),
    "model.gamma": P(1.0, "net"),
    "model.matcher_alpha": P(0.5, "net"),
    "model.matcher_gamma": P(1.0, "net"),
    "model.clip_max_norm": P(0.5, "trainer"),
    "model.aux_loss": P(False, "net"),
    "model.loss_types": P(["vfl"], "net"),
    "model.backbone_names": P(["backbone.res_layers"], "optimizer"),
    "model.linear_proj_names": P(["value_proj"], "optimizer", (("model.lr_linear_proj_mult", 0.1),)),
    "model.lr_linear_proj_mult": P(0.1, "optimizer"),
    "model.distillation_loss_coef": P(2.0, "distill_loss"),
    "model.mal_loss_coef": P(2.0, "net", MAL),
    "model.mal_gamma": P(2.0, "net", MAL),
    "model.mal_alpha": P(0.5, "net", MAL),
    # --- dataset ---
    "dataset.train_data_sources": P([{"image_dir": "{val_images}", "json_file": "{val_json}"}], "batch"),
    "dataset.val_data_sources.image_dir": P("{train_images}", "val"),
    "dataset.val_data_sources.json_file": P(
        "{train_json}", "val", (("dataset.val_data_sources.image_dir", "{train_images}"),)
    ),
    "dataset.test_data_sources.image_dir": P("{train_images}", "eval_results"),
    "dataset.test_data_sources.json_file": P(
        "{train_json}", "eval_results", (("dataset.test_data_sources.image_dir", "{train_images}"),)
    ),
    "dataset.infer_data_sources.image_dir": P(["{train_images}"], "infer_files"),
    "dataset.infer_data_sources.classmap": P("{classmap}", "infer_files"),
    "dataset.infer_data_sources.stream": P("file://{video}", "infer_files"),
    "dataset.quant_calibration_data_sources.image_dir": P("{val_images}", "quant_calib", QUANT),
    "dataset.quant_calibration_data_sources.json_file": P("{train_json}", "quant_eval", QUANT),
    "dataset.batch_size": P(1, "batch"),
    "dataset.workers": P(1, "loader"),
    "dataset.pin_memory": P(False, "loader"),
    "dataset.num_classes": P(6, "net"),
    "dataset.eval_class_ids": P([1], "val"),
    "dataset.skip_corrupt_images": P(True, "loader"),
    "dataset.cache_dir": P(
        "{tmp}/cache",
        "loader",
        (("dataset.train_data_sources", [{"image_dir": "{train_tar}", "json_file": "{train_json}"}]),),
    ),
    "dataset.augmentation.multi_scales": P([96], "batch"),
    "dataset.augmentation.train_spatial_size": P([96, 96], "batch", (("dataset.augmentation.multi_scales", []),)),
    "dataset.augmentation.eval_spatial_size": P([96, 96], "val"),
    "dataset.augmentation.distortion_prob": P(0.0, "batch"),
    "dataset.augmentation.iou_crop_prob": P(0.0, "batch"),
    "dataset.augmentation.zoom_out_prob": P(0.0, "batch"),
    "dataset.augmentation.zoom_out_max_scale": P(1.5, "batch", (("dataset.augmentation.zoom_out_prob", 1.0),)),
    "dataset.augmentation.hflip_prob": P(0.0, "batch"),
    "dataset.augmentation.preserve_aspect_ratio": P(True, "val"),
    "dataset.augmentation.stop_epoch": P(0, "batch"),
    "dataset.augmentation.mosaic_prob": P(0.0, "batch", DEIM),
    "dataset.augmentation.mosaic_epochs": P([3, 4], "batch", DEIM),
    "dataset.augmentation.mixup_prob": P(0.0, "batch", DEIM),
    "dataset.augmentation.mixup_epochs": P([3, 4], "batch", DEIM),
    # --- train ---
    "train.num_gpus": P(2, "launch"),
    "train.gpu_ids": P([1], "launch"),
    "train.num_nodes": P(2, "launch"),
    "train.seed": P(7, "trainer"),
    "train.cudnn.benchmark": P(True, "cudnn"),
    "train.cudnn.deterministic": P(False, "cudnn"),
    "train.num_epochs": P(3, "trainer"),
    "train.checkpoint_interval": P(2, "hooks"),
    "train.checkpoint_interval_unit": P("step", "hooks"),
    "train.validation_interval": P(2, "hooks"),
    "train.resume_training_checkpoint_path": P("{resumable}", "trainer"),
    "train.results_dir": P("{tmp}/train_elsewhere", "dirs"),
    "train.freeze": P(["encoder"], "model"),
    "train.pretrained_model_path": P("{checkpoint}", "model"),
    "train.clip_grad_norm": P(0.5, "trainer"),
    "train.is_dry_run": P(True, "cli"),
    "train.enable_ema": P(True, "trainer"),
    "train.ema.decay": P(0.99, "trainer", EMA),
    "train.ema.warmup_steps": P(10, "trainer", EMA),
    "train.ema.every_n_steps": P(2, "trainer", EMA),
    "train.ema.validate_original_weights": P(True, "hooks", EMA),
    "train.ema.cpu_offload": P(True, "trainer", EMA),
    "train.optim.optimizer": P("SGD", "optimizer"),
    "train.optim.monitor_name": P("val_mAP", "hooks"),
    "train.optim.lr": P(1e-3, "optimizer"),
    "train.optim.lr_backbone": P(1e-3, "optimizer"),
    "train.optim.momentum": P(0.5, "optimizer", SGD),
    "train.optim.weight_decay": P(0.01, "optimizer"),
    "train.optim.lr_scheduler": P("StepLR", "schedule", (("train.optim.lr_step_size", 1),)),
    "train.optim.lr_steps": P([1], "schedule"),
    "train.optim.lr_step_size": P(1, "schedule", STEP_LR),
    "train.optim.lr_decay": P(0.5, "schedule", (("train.optim.lr_steps", [1]),)),
    "train.optim.warmup_steps": P(5, "schedule"),
    "train.optim.flat_epochs": P(1, "schedule", FLAT_COSINE),
    "train.optim.min_lr_factor": P(0.1, "schedule", FLAT_COSINE),
    "train.recipe": P("deim", "schedule"),
    "train.precision": P("bf16", "trainer"),
    "train.sync_bn": P(False, "trainer"),
    "train.activation_checkpoint": P(False, "model"),
    "train.early_stopping_patience": P(2, "hooks"),
    "train.plots": P(False, "hooks"),
    "train.strict_load": P(
        True, "model", (("train.pretrained_model_path", "{checkpoint}"), ("model.backbone", "resnet_50"))
    ),
    "train.device": P("cuda", "trainer"),
    # --- evaluate (rtdetr evaluate; rtdetr-deploy evaluate reads the same section) ---
    "evaluate.checkpoint": P("{checkpoint2}", "eval_results"),
    "evaluate.trt_engine": P("{onnx}", "deploy_eval_results"),
    "evaluate.results_dir": P("{tmp}/evaluated", "dirs"),
    "evaluate.batch_size": P(1, "eval_input"),
    "evaluate.input_width": P(96, "eval_input"),
    "evaluate.input_height": P(96, "eval_input"),
    "evaluate.conf_threshold": P(0.9, "eval_results"),
    "evaluate.is_quantized": P(True, "eval_results"),
    # --- inference ---
    "inference.checkpoint": P("{checkpoint2}", "infer_files"),
    "inference.trt_engine": P("{onnx}", "deploy_infer_files"),
    "inference.results_dir": P("{tmp}/inferred", "dirs"),
    "inference.batch_size": P(1, "infer_input"),
    "inference.color_map": P(
        {"{class0}": "#ff0000", "{class1}": "#ff0000", "{class2}": "#ff0000", "{class3}": "#ff0000"}, "infer_files"
    ),
    "inference.conf_threshold": P(0.99, "infer_files"),
    "inference.input_width": P(96, "infer_input"),
    "inference.input_height": P(96, "infer_input"),
    "inference.outline_width": P(1, "infer_files"),
    "inference.is_quantized": P(True, "infer_files"),
    "inference.track": P(True, "infer_files", (("dataset.infer_data_sources.image_dir", ["{video}"]),)),
    # --- export ---
    "export.results_dir": P("{tmp}/exported", "dirs"),
    "export.gpu_id": P(1, "export_device"),
    "export.checkpoint": P("{checkpoint2}", "export_graph"),
    "export.onnx_file": P("{tmp}/other.onnx", "export_graph"),
    "export.on_cpu": P(True, "export_device"),
    "export.input_width": P(96, "export_graph"),
    "export.input_height": P(96, "export_graph"),
    "export.opset_version": P(16, "export_graph"),
    "export.batch_size": P(2, "export_graph"),
    "export.verbose": P(True, "export_graph"),
    "export.is_quantized": P(True, "export_graph"),
    "export.raw_outputs": P(True, "export_graph"),
    "export.simplify": P(True, "export_graph"),
    "export.check_parity": P(True, "export_graph"),
    # --- gen_trt_engine: what the TensorRT builder receives ---
    "gen_trt_engine.results_dir": P("{tmp}/engines", "dirs"),
    "gen_trt_engine.onnx_file": P("{onnx2}", "trt_build"),
    "gen_trt_engine.trt_engine": P("{tmp}/model.engine", "trt_build"),
    "gen_trt_engine.timing_cache": P("{tmp}/timing.cache", "trt_build"),
    "gen_trt_engine.batch_size": P(2, "trt_build"),
    "gen_trt_engine.verbose": P(True, "trt_build"),
    "gen_trt_engine.tensorrt.data_type": P("FP16", "trt_build"),
    "gen_trt_engine.tensorrt.workspace_size": P(64, "trt_build"),
    "gen_trt_engine.tensorrt.min_batch_size": P(2, "trt_build", (("gen_trt_engine.tensorrt.opt_batch_size", 2),)),
    "gen_trt_engine.tensorrt.opt_batch_size": P(2, "trt_build"),
    "gen_trt_engine.tensorrt.max_batch_size": P(8, "trt_build"),
    "gen_trt_engine.tensorrt.layers_precision": P(["/decoder/MatMul:fp32"], "trt_build"),
    "gen_trt_engine.tensorrt.calibration.cal_image_dir": P(["{val_images}"], "trt_build", INT8),
    "gen_trt_engine.tensorrt.calibration.cal_cache_file": P("{tmp}/cal.cache", "trt_build", CAL),
    "gen_trt_engine.tensorrt.calibration.cal_batch_size": P(2, "trt_build", CAL),
    "gen_trt_engine.tensorrt.calibration.cal_batches": P(2, "trt_build", CAL),
    # --- quantize: what ModelOpt receives ---
    "quantize.mode": P("weight_only_ptq", "quant_config", QUANT),
    "quantize.algorithm": P("entropy", "quant_config", QUANT),
    "quantize.percentile": P(99.0, "quant_config", (*QUANT, ("quantize.algorithm", "percentile"))),
    "quantize.layers": P([{"module_name": "*encoder*", "weights": {"dtype": "int8"}}], "quant_config"),
    "quantize.skip_names": P(["*decoder*"], "quant_config", QUANT),
    "quantize.default_layer_dtype": P("int8", "quant_config"),
    "quantize.default_activation_dtype": P("int8", "quant_config", (("quantize.default_layer_dtype", "int8"),)),
    "quantize.model_path": P("{checkpoint2}", "quant_calib", QUANT),
    "quantize.results_dir": P("{tmp}/quantized", "dirs"),
    "quantize.calibration_batches": P(1, "quant_calib", QUANT),
    "quantize.device": P("cuda", "quant_config", QUANT),
    "quantize.backend_kwargs": P({"verbose": True}, "quant_config", QUANT),
    "quantize.backend": P("torchao", "quant_config", QUANT),
    # --- distill ---
    "distill.pretrained_teacher_model_path": P("{checkpoint2}", "distill_loss"),
    "distill.bindings": P(
        [{"student_module_name": "dsrcs", "teacher_module_name": "dsrcs", "criterion": "L1"}], "distill_loss"
    ),
    "distill.results_dir": P("{tmp}/distilled", "dirs"),
    # --- automl: the study and its trials ---
    "automl.algorithm": P("random", "automl"),
    "automl.num_trials": P(3, "automl"),
    "automl.metric": P("val_loss", "automl"),
    "automl.direction": P("minimize", "automl"),
    "automl.parameters": P(["train.optim.weight_decay"], "automl"),
    "automl.ranges": P({"train.optim.lr": [1e-4, 2e-4]}, "automl"),
    "automl.enqueue_trials": P([{"train.optim.lr": 5e-4}], "automl"),
    "automl.storage": P("sqlite:///{tmp}/other_study.db", "automl"),
    "automl.study_name": P("other", "automl"),
    "automl.seed": P(5, "automl"),
    "automl.timeout": P(1e-9, "automl"),
    "automl.results_dir": P("{tmp}/searched", "dirs"),
    "automl.hyperband_min_epochs": P(2, "automl", HYPERBAND),
    "automl.hyperband_reduction_factor": P(2, "automl", HYPERBAND),
}
"""Key → probe. One line per key; see the module docstring."""

REFUSED: dict[str, Any] = {
    "model.frozen_fm.enabled": True,
    "distill.teacher.frozen_fm.enabled": True,
    "train.checkpointer.enable_topk": True,
    "export.serialize_nvdsinfer": True,
    "inference.is_internal": True,
}
"""TAO keys whose non-default value switches on something not built here: that value is a one-line error naming
the key (their other values, and the keys that only matter with them, are COMPATIBILITY_ONLY)."""

COMPAT_VALUES: dict[str, Any] = {  # non-default values of compatibility-only keys that have no probe
    "precise_msda": True,
    "frozen_fm.backbone": "radio_v2-b",
    "frozen_fm.checkpoint": "radio.pth",
    "checkpointer.replace_periodic": True,
    "checkpointer.monitor": "val_mAP",
    "checkpointer.mode": "max",
    "checkpointer.save_top_k": 3,
    "checkpointer.filename": "best",
    "checkpointer.dirpath": "{tmp}/topk",
    "checkpointer.auto_insert_metric_name": True,
}

TEACHER_PROBES = {  # the teacher's architecture: what distill builds from distill.teacher
    k: "teacher"
    for k in (
        "preset", "pretrained_backbone_path", "backbone", "freeze_norm", "num_queries", "num_feature_levels",
        "return_interm_indices", "feat_strides", "feat_channels", "use_encoder_idx", "hidden_dim", "enc_hidden_dim",
        "nheads", "enc_layers", "dim_feedforward", "dec_dim_feedforward", "pe_temperature", "expansion",
        "depth_mult", "enc_act", "act", "dec_layers", "eval_idx", "num_points", "cross_attn_method",
        "query_select_method",
    )
}  # fmt: skip
for _key, _aspect in TEACHER_PROBES.items():
    _student = PROBES[f"model.{_key}"]
    _teacher = lambda pairs: tuple((k.replace("model.", "distill.teacher.", 1), v) for k, v in pairs)  # noqa: E731
    PROBES[f"distill.teacher.{_key}"] = P(_student.value, _aspect, _teacher(_student.given), _teacher(_student.also))


def leaf_keys() -> list[str]:
    """Every leaf key of the schemas (all actions share the spec's properties)."""

    def walk(props: dict[str, Any], prefix: str):
        for name, prop in props.items():
            if "properties" in prop:
                yield from walk(prop["properties"], f"{prefix}{name}.")
            else:
                yield f"{prefix}{name}", prop

    return list(walk(base_schema()["properties"], ""))


def single_valued(prop: dict[str, Any]) -> bool:
    """A key with one valid value (``enum`` of one, or a ``const``): nothing to change it to."""
    return "const" in prop or len([e for e in prop.get("enum", [None, None]) if e is not None]) == 1


# --- the world the probes run in ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Iterator[dict[str, str]]:
    root = tmp_path_factory.mktemp("effects")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RTDETR_CACHE_DIR", str(root / "default_cache"))
        yield _world(root)


def _world(root: Path) -> dict[str, str]:
    train = write_split(root / "train", 4, size=(64, 64), seed=0)
    val = write_split(root / "val", 2, size=(96, 64), seed=1)
    paths = {
        "tmp": str(root),
        "train_images": str(train.image_dir),
        "train_json": str(train.json_file),
        "val_images": str(val.image_dir),
        "val_json": str(val.json_file),
    }
    (root / "classes.txt").write_text("a\nb\nc\nd\n")
    with tarfile.open(root / "train_images.tar.gz", "w:gz") as tar:
        tar.add(train.image_dir, arcname="images")
    paths["train_tar"] = str(root / "train_images.tar.gz")
    paths["classmap"] = str(root / "classes.txt")
    paths["video"] = str(write_video(root / "clip.mp4", 3, size=(64, 64)))
    spec = make_spec(paths, [])
    paths["checkpoint"] = str(_checkpoint(spec, root / "ckpt.pth", seed=0))
    paths["checkpoint2"] = str(_checkpoint(spec, root / "ckpt2.pth", seed=1))
    paths["resumable"] = str(_resumable(spec, root / "resumable.pth"))
    names = torch.load(paths["checkpoint"], weights_only=True)["category_map"]["category_names"]
    paths.update({f"class{i}": name for i, name in enumerate(names)})
    paths["backbone_weights"] = str(_backbone_weights(spec, root / "backbone.pth"))
    paths["onnx"] = str(_onnx(spec, paths["checkpoint"], root / "model.onnx"))
    paths["onnx2"] = shutil.copy(paths["onnx"], root / "model2.onnx")
    return paths


def base_overrides(paths: dict[str, str]) -> dict[str, Any]:
    source = lambda p: {"image_dir": paths[f"{p}_images"], "json_file": paths[f"{p}_json"]}  # noqa: E731
    return {
        "results_dir": f"{paths['tmp']}/results",
        "model": {**TINY_MODEL, "num_queries": 10, "num_select": 10, "dn_number": 4},
        "dataset.train_data_sources": [source("train")],
        "dataset.val_data_sources": source("val"),
        "dataset.test_data_sources": source("val"),
        "dataset.infer_data_sources": {"image_dir": [paths["val_images"]]},
        "dataset.quant_calibration_data_sources": {"image_dir": paths["train_images"]},
        "dataset.num_classes": 4,
        "dataset.batch_size": 2,
        "dataset.workers": 0,
        "dataset.augmentation": {
            "train_spatial_size": [64, 64],
            "eval_spatial_size": [64, 64],
            "multi_scales": [64, 96],
        },
        "train.device": "cpu",
        "train.num_epochs": 4,
        "train.seed": 3,
        "evaluate.checkpoint": paths.get("checkpoint"),
        "inference.checkpoint": paths.get("checkpoint"),
        "inference.conf_threshold": 0.0,
        "export.checkpoint": paths.get("checkpoint"),
        "export.onnx_file": f"{paths['tmp']}/export.onnx",
        "export.input_width": 64,
        "export.input_height": 64,
        "export.check_parity": False,
        "quantize.model_path": paths.get("checkpoint"),
        "quantize.calibration_batches": 2,
        "gen_trt_engine.onnx_file": paths.get("onnx"),
        "gen_trt_engine.trt_engine": f"{paths['tmp']}/base.engine",
        "distill": {
            "teacher": {k: v for k, v in TINY_MODEL.items() if k not in ("num_select", "dn_number")}
            | {"num_queries": 10},
            "pretrained_teacher_model_path": paths.get("checkpoint"),
        },
        "automl.num_trials": 2,
        "automl.parameters": ["train.optim.lr"],
        "automl.algorithm": "random",
    }


def fill(value: Any, paths: dict[str, str]) -> Any:
    if isinstance(value, str):
        return value.format(**paths)
    if isinstance(value, list):
        return [fill(v, paths) for v in value]
    if isinstance(value, dict):
        return {fill(k, paths): fill(v, paths) for k, v in value.items()}
    return value


def make_spec(paths: dict[str, str], settings: list[tuple[str, Any]]) -> ExperimentSpec:
    items = {k: v for k, v in base_overrides(paths).items() if v is not None}
    overrides = [f"{k}={json.dumps(v)}" for k, v in items.items()]
    overrides += [f"{k}={json.dumps(fill(v, paths))}" for k, v in settings]
    return load_spec(None, overrides).spec


def _checkpoint(spec: ExperimentSpec, path: Path, seed: int) -> Path:
    from rtdetr_tao.data.categories import category_map_from_sources
    from rtdetr_tao.engine.checkpoint import save_checkpoint
    from rtdetr_tao.model.build import build_model

    torch.manual_seed(seed)
    model = build_model(spec.model, 4, eval_spatial_size=(64, 64))
    cmap = category_map_from_sources(spec.dataset, spec.dataset.train_data_sources)
    state = {"model": model.state_dict(), "spec": spec.model_dump(mode="json"), "category_map": cmap.to_dict()}
    return save_checkpoint(path, {**state, "epoch": 0})


def _resumable(spec: ExperimentSpec, path: Path) -> Path:
    """A checkpoint of the train action after its first epoch (as CheckpointHook writes it)."""
    from rtdetr_tao.engine.hooks import CheckpointHook

    with pytest.MonkeyPatch.context() as m:
        trainer = _run_training("train", _fresh(spec, path.parent / "resumable"), m)
    trainer.state.global_step, trainer.state.steps_per_epoch, trainer.state.step_in_epoch = 2, 2, 2
    hook = next(h for h in trainer.hooks if isinstance(h, CheckpointHook))
    saved = hook.save(step=None)
    saved.replace(path)
    return path


def _backbone_weights(spec: ExperimentSpec, path: Path) -> Path:
    from rtdetr_tao.model.build import build_model

    torch.manual_seed(1)
    torch.save(build_model(spec.model, 4).backbone.state_dict(), path)
    return path


def _onnx(spec: ExperimentSpec, checkpoint: str, path: Path) -> Path:
    from rtdetr_tao.actions import export

    update = {"checkpoint": checkpoint, "onnx_file": str(path), "check_parity": False}
    return export.run(spec.model_copy(update={"export": spec.export.model_copy(update=update)}))


# --- observers: aspect → fingerprint of what the job does ----------------------------------------------------------


def digest(value: Any) -> str:
    if torch.is_tensor(value):
        value = value.detach().float().contiguous().numpy()
    if isinstance(value, np.ndarray):
        return hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest()[:16]
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


class Recorded(Exception):
    """Raised by a recorder to stop a job at the boundary it observes."""


def _run_training(action: str, spec: ExperimentSpec, monkeypatch) -> Any:
    """Run the train (or distill) action up to Trainer.train; returns the trainer it built."""
    from rtdetr_tao.engine.trainer import Trainer

    box: dict[str, Any] = {}

    def record(self):
        box["trainer"] = self
        return self.state

    from rtdetr_tao.engine.setup import JobContext

    real_wrap = JobContext.wrap_ddp

    def wrap(self, model, *, sync_bn):
        box["sync_bn"] = sync_bn
        return real_wrap(self, model, sync_bn=sync_bn)

    monkeypatch.setattr(Trainer, "train", record)
    monkeypatch.setattr(JobContext, "wrap_ddp", wrap)
    module = __import__(f"rtdetr_tao.actions.{action}", fromlist=["run"])
    module.run(spec)
    box["trainer"].asked_sync_bn = box["sync_bn"]  # what the job asked the DDP wrapper for
    return box["trainer"]


def _batch_fingerprint(loader, epoch: int) -> list[Any]:
    loader.set_epoch(epoch)
    images, targets = next(iter(loader))
    return [list(images.shape), digest(images), [digest(t["boxes"]) + digest(t["labels"]) for t in targets]]


def _hook_settings(trainer) -> list[Any]:
    plain = (int, float, str, bool, type(None), list, tuple, dict)
    return [
        (type(h).__name__, {k: v for k, v in vars(h).items() if k != "trainer" and isinstance(v, plain)})
        for h in trainer.hooks
    ]


def _net_fingerprint(model, loss_fn, spec: ExperimentSpec) -> list[Any]:
    """Structure, trainable flags, one training loss and one eval output of the model the job built."""
    h, w = spec.dataset.augmentation.train_spatial_size
    torch.manual_seed(0)
    images = torch.rand(2, 3, h, w)
    boxes = torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.6, 0.6, 0.3, 0.2], [0.5, 0.4, 0.4, 0.3], [0.7, 0.2, 0.2, 0.2]])
    targets = [{"labels": torch.tensor([0, 1, 2, 3]), "boxes": boxes}] * 2
    structure = [(n, type(m).__name__) for n, m in model.named_modules()]
    params = [(n, list(p.shape), p.requires_grad, digest(p)) for n, p in model.named_parameters()]
    model.train()
    torch.manual_seed(1)
    losses = loss_fn(model, images, targets, nullcontext)
    model.eval()
    with torch.no_grad():
        out = model(images)
    rounded = {k: float(v.detach()) for k, v in losses.items()}
    return [digest(structure), digest(params), rounded, digest(out["pred_logits"]), digest(out["pred_boxes"])]


def observe(aspect: str, spec: ExperimentSpec, paths: dict[str, str], monkeypatch, tmp: Path) -> Any:
    """The fingerprint of ``aspect`` of the jobs ``spec`` describes; an error the job raises is one too."""
    try:
        return OBSERVERS[aspect](spec, paths, monkeypatch, tmp)
    except (RTDETRError, Recorded) as error:
        return f"{type(error).__name__}: {error}"


def _fresh(spec: ExperimentSpec, tmp: Path) -> ExperimentSpec:
    """The spec with a results folder of its own (a reused one would be resumed from)."""
    return (
        spec.model_copy(update={"results_dir": str(tmp / "results")}) if spec.results_dir.endswith("/results") else spec
    )


def o_training(part: str):
    def observer(spec, paths, monkeypatch, tmp):
        import torch.backends.cudnn as cudnn

        trainer = _run_training("train", _fresh(spec, tmp), monkeypatch)
        if part == "optimizer":
            names = {id(p): n for n, p in trainer.model.named_parameters()}
            groups = [
                (
                    g.get("name"),
                    g["lr"],
                    g["weight_decay"],
                    digest(sorted(names.get(id(p), "?") for p in g["params"])),
                    g.get("momentum"),
                    g.get("betas"),
                )
                for g in trainer.optimizer.param_groups
            ]
            return [type(trainer.optimizer).__name__, groups]
        if part == "schedule":
            steps = [(e, s) for e in range(0, 6) for s in (0, 2, 4, 1000)]
            return [trainer.schedule.factor(e, s) for e, s in steps]
        if part == "trainer":
            ema = trainer.ema
            ema_settings = None if ema is None else [ema.decay, ema.warmup_steps, ema.device]
            return [
                trainer.num_epochs, trainer.seed, trainer.clip_grad_norm, trainer.precision, str(trainer.device),
                trainer.ema_every, ema_settings, trainer.asked_sync_bn, trainer.state.global_step,
            ]  # fmt: skip
        if part == "hooks":
            return _hook_settings(trainer)
        if part == "loader":
            loader = trainer.loader
            dataset = loader.dataset
            first = digest(repr(dataset.records[0]))  # where the images are read from
            return [loader.loader.num_workers, loader.pin_memory, dataset.skip_corrupt, first]
        if part == "batch":
            return [len(trainer.loader), _batch_fingerprint(trainer.loader, 0), _batch_fingerprint(trainer.loader, 1)]
        if part == "model":
            model = trainer.model
            return [model.activation_checkpoint, [(n, p.requires_grad, digest(p)) for n, p in model.named_parameters()]]
        if part == "cudnn":
            return [cudnn.benchmark, cudnn.deterministic]
        if part == "val":
            from rtdetr_tao.engine.hooks import EvalHook

            hook = next(h for h in trainer.hooks if isinstance(h, EvalHook))
            return hook.evaluate(trainer.eval_model)
        raise AssertionError(part)

    return observer


def o_net(spec, paths, monkeypatch, tmp):
    """model.* through the builders the train action calls with spec.model (the whole section)."""
    from rtdetr_tao.actions.train import detection_loss
    from rtdetr_tao.model.build import build_criterion, build_model

    size = tuple(spec.dataset.augmentation.eval_spatial_size)
    torch.manual_seed(0)
    model = build_model(spec.model, spec.dataset.num_classes, eval_spatial_size=size)
    criterion = build_criterion(spec.model, spec.dataset.num_classes)
    settings = [_plain(criterion), _plain(criterion.matcher)]
    return [settings, *_net_fingerprint(model, detection_loss(spec, criterion, None, model), spec)]


def _plain(module) -> dict[str, Any]:
    """A module's plain settings (numbers, strings, lists of them)."""
    return {
        k: v
        for k, v in vars(module).items()
        if isinstance(v, int | float | str | list | tuple | dict) and not k.startswith("_")
    }


def o_teacher(spec, paths, monkeypatch, tmp):
    """distill.teacher through the builder the distill action calls with it."""
    from rtdetr_tao.model.build import build_model

    torch.manual_seed(0)
    teacher = build_model(spec.distill.teacher, spec.dataset.num_classes).eval()
    h, w = spec.dataset.augmentation.train_spatial_size
    with torch.no_grad():
        out = teacher(torch.rand(1, 3, h, w))
    return [
        digest([(n, list(p.shape)) for n, p in teacher.named_parameters()]),
        [type(m).__name__ for m in teacher.modules()],
        digest(out["pred_logits"]),
    ]


def o_distill(part: str):
    def observer(spec, paths, monkeypatch, tmp):
        from rtdetr_tao.model.weights import load_weights

        real_load = load_weights

        def lenient(model, source, *args, **kwargs):  # the probes change the teacher; its weights stay the same file
            return real_load(model, source, *args, **kwargs)

        trainer = _run_training("distill", _fresh(spec, tmp), monkeypatch)
        if part == "student":
            return digest([digest(p) for p in trainer.model.parameters()])
        h, w = spec.dataset.augmentation.train_spatial_size
        torch.manual_seed(0)
        images = torch.rand(2, 3, h, w)
        targets = [{"labels": torch.tensor([0]), "boxes": torch.tensor([[0.5, 0.5, 0.3, 0.3]])}] * 2
        torch.manual_seed(1)
        losses = trainer.loss_fn(trainer.model, images, targets, nullcontext)
        return {k: round(float(v.detach()), 5) for k, v in losses.items()}

    return observer


def o_launch(spec, paths, monkeypatch, tmp):
    from rtdetr_tao.engine.distributed import plan_launch
    from rtdetr_tao.engine.setup import start_job

    train = spec.train
    plan = plan_launch(train.num_gpus, train.device_ids, train.num_nodes, {}, use_cuda=True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with start_job(
        _fresh(spec, tmp), "train", device="cuda", device_ids=train.device_ids, seed=train.seed, cudnn=train.cudnn
    ) as ctx:
        device = str(ctx.device)
    return [vars(plan) if plan is not None else None, device]


def o_cli(spec, paths, monkeypatch, tmp):
    from rtdetr_tao import cli
    from rtdetr_tao.actions import train

    calls: list[str] = []
    monkeypatch.setattr(train, "run", lambda s: calls.append("run"))
    monkeypatch.setattr(
        cli, "load_spec", lambda *a, **k: type("L", (), {"spec": spec, "warnings": ()})(), raising=False
    )
    import rtdetr_tao.config as config

    monkeypatch.setattr(config, "load_spec", lambda *a, **k: type("L", (), {"spec": spec, "warnings": ()})())
    cli.main(["train", "-e", "unused.yaml"])
    return calls


def o_dirs(spec, paths, monkeypatch, tmp):
    from rtdetr_tao.commands import SPEC_ACTIONS

    return {action: spec.action_dir(action) for action in SPEC_ACTIONS}


def o_evaluate(part: str):
    def observer(spec, paths, monkeypatch, tmp):
        from rtdetr_tao.actions import evaluate

        shapes: list[list[int]] = []
        real = evaluate.predict

        def recording(model, loader, *args, **kwargs):
            shapes.extend(list(images.shape) for images, _ in loader)
            return real(model, loader, *args, **kwargs)

        scored: list[Any] = []
        real_coco = evaluate.coco_evaluation

        def scoring(coco_gt, detections, *args, **kwargs):
            scored.append([coco_gt.getImgIds(), [digest(d.scores) + digest(d.boxes) for d in detections], args, kwargs])
            return real_coco(coco_gt, detections, *args, **kwargs)

        monkeypatch.setattr(evaluate, "predict", recording)
        monkeypatch.setattr(evaluate, "coco_evaluation", scoring)
        evaluate.run(_fresh(spec, tmp))
        return shapes if part == "input" else digest(scored)

    return observer


def o_inference(part: str):
    def observer(spec, paths, monkeypatch, tmp):
        from rtdetr_tao.actions import inference
        from rtdetr_tao.data import loader as loader_module

        shapes: list[list[int]] = []
        real = loader_module.build_infer_loader

        def recording(*args, **kwargs):
            built = real(*args, **kwargs)
            shapes.extend(list(images.shape) for images, _ in built)
            return built

        monkeypatch.setattr(loader_module, "build_infer_loader", recording)
        out = Path(inference.run(_fresh(spec, tmp)))
        if part == "input":
            return shapes
        return _files(out)

    return observer


def _files(folder: Path) -> dict[str, str]:
    skip = {"status.json", "log.txt", "experiment.yaml"}
    return {
        str(p.relative_to(folder)): digest(p.read_bytes().hex())
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name not in skip
    }


def o_deploy(part: str):
    def observer(spec, paths, monkeypatch, tmp):
        from rtdetr_tao.config.loader import check_action

        spec = _fresh(spec, tmp)
        check_action(spec, f"deploy_{part}", "spec")  # as the CLI does when it loads the spec
        if part == "evaluate":
            from rtdetr_deploy.actions import evaluate

            metrics = evaluate.run(spec)
            return {k: v for k, v in vars(metrics).items() if isinstance(v, float | int)}
        from rtdetr_deploy.actions import inference

        return _files(Path(inference.run(spec)))

    return observer


def o_export(part: str):
    def observer(spec, paths, monkeypatch, tmp):
        import onnx
        import onnx.numpy_helper

        from rtdetr_tao.actions import export

        if part == "device":
            devices: list[str] = []

            def record(spec, action, *, device, **_):
                devices.append(device)
                raise Recorded(device)

            monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
            monkeypatch.setattr(export, "start_job", record)
            with suppress(Recorded):
                export.run(spec)
            return devices
        calls: list[Any] = []
        real = export.export_onnx
        monkeypatch.setattr(export, "export_onnx", lambda *a, **k: (calls.append(k), real(*a, **k))[1])
        spec = _fresh(spec, tmp)
        spec = spec.model_copy(
            update={"export": spec.export.model_copy(update={"onnx_file": str(tmp / Path(spec.export.onnx_file).name)})}
        )
        path = export.run(spec)
        graph = onnx.load(str(path))
        dims = [[d.dim_value or d.dim_param for d in i.type.tensor_type.shape.dim] for i in graph.graph.input]
        ops = sorted({n.op_type for n in graph.graph.node})
        ops.append(digest([digest(onnx.numpy_helper.to_array(t)) for t in graph.graph.initializer]))
        status = (tmp / "results" / "export" / "status.json").read_text().splitlines()[-1]
        return [
            Path(path).name,
            dims,
            [o.name for o in graph.graph.output],
            graph.opset_import[0].version,
            ops,
            len(graph.graph.node),
            calls,
            "onnx_max_abs_diff" in status,
        ]

    return observer


def o_trt(spec, paths, monkeypatch, tmp):
    from rtdetr_deploy.actions import gen_trt_engine

    calls: list[Any] = []

    def record(onnx_path, engine_path, settings, batches, cache):
        described = None
        if batches is not None:
            described = [batches.batch_size, batches.num_batches, [list(b.shape) for b in batches]]
        calls.append([str(onnx_path), str(engine_path), vars(settings), described, str(vars(cache))])

    monkeypatch.setattr(gen_trt_engine, "build_engine", record)
    gen_trt_engine.run(_fresh(spec, tmp))
    return calls


def o_quantize(part: str):
    def observer(spec, paths, monkeypatch, tmp):
        import modelopt.torch.quantization as mtq

        from rtdetr_tao.actions import quantize

        seen: dict[str, Any] = {}

        def record(model, config, forward_loop=None):
            batches: list[list[int]] = []
            real_forward = model.forward
            model.forward = lambda images, *a, **k: (batches.append(list(images.shape)), real_forward(images, *a, **k))[
                1
            ]
            forward_loop(model)
            weights = digest([digest(p) for p in model.parameters()])
            seen.update(config=json.loads(json.dumps(config, default=str)), batches=[batches, weights])
            raise Recorded("calibrated")

        monkeypatch.setattr(mtq, "quantize", record)
        if part == "eval":
            from rtdetr_tao.eval import coco

            evaluated: list[Any] = []
            real_eval = coco.evaluate_coco
            monkeypatch.setattr(
                coco, "evaluate_coco", lambda gt, *a, **k: (evaluated.append(gt.getImgIds()), real_eval(gt, *a, **k))[1]
            )
            with suppress(Recorded):
                quantize.run(_fresh(spec, tmp))
            return evaluated
        with suppress(Recorded):
            quantize.run(_fresh(spec, tmp))
        return seen.get("config") if part == "config" else seen.get("batches")

    return observer


def o_automl(spec, paths, monkeypatch, tmp):
    from rtdetr_tao.actions import automl
    from rtdetr_tao.automl.trials import TrialOutcome

    seen: list[Any] = []

    def runner(spec_path, trial_dir, metric, report):
        trial = load_spec(spec_path, action="train").spec
        seen.append([trial.train.optim.lr, trial.train.optim.weight_decay, metric])
        value = -math.log10(trial.train.optim.lr)
        for epoch in range(1, trial.train.num_epochs + 1):
            if report(epoch, value * epoch) and epoch < trial.train.num_epochs:
                return TrialOutcome("PRUNED", value * epoch, 0.0, epoch)
        return TrialOutcome("COMPLETE", value, 0.0, trial.train.num_epochs)

    try:
        best = automl.run(_fresh(spec, tmp), runner=runner)
    except RTDETRError as error:
        return [seen, str(error)]
    results = json.loads((Path(best).parent / "results.json").read_text())
    return [
        seen,
        {k: v for k, v in results.items() if k in ("direction", "study_name", "storage", "best_value")},
        results.get("trials"),
    ]


OBSERVERS = {
    **{
        part: o_training(part)
        for part in ("optimizer", "schedule", "trainer", "hooks", "loader", "batch", "model", "cudnn", "val")
    },
    "net": o_net,
    "teacher": o_teacher,
    "student": o_distill("student"),
    "distill_loss": o_distill("loss"),
    "launch": o_launch,
    "cli": o_cli,
    "dirs": o_dirs,
    "eval_results": o_evaluate("results"),
    "eval_input": o_evaluate("input"),
    "infer_files": o_inference("files"),
    "infer_input": o_inference("input"),
    "deploy_eval_results": o_deploy("evaluate"),
    "deploy_infer_files": o_deploy("inference"),
    "export_graph": o_export("graph"),
    "export_device": o_export("device"),
    "trt_build": o_trt,
    "quant_config": o_quantize("config"),
    "quant_calib": o_quantize("calib"),
    "quant_eval": o_quantize("eval"),
    "automl": o_automl,
}


# --- the tests ---------------------------------------------------------------------------------------------------


def test_every_key_is_probed_or_compatibility_only():
    keys = dict(leaf_keys())
    fixed = {k for k, prop in keys.items() if single_valued(prop)}
    unaccounted = sorted(set(keys) - set(PROBES) - set(COMPATIBILITY_ONLY) - set(REFUSED) - fixed)
    assert not unaccounted, f"add a probe to PROBES (or a COMPATIBILITY_ONLY entry) for: {unaccounted}"
    both = sorted(set(PROBES) & set(COMPATIBILITY_ONLY))
    assert not both, f"keys both probed and compatibility-only: {both}"
    stale = sorted((set(PROBES) | set(COMPATIBILITY_ONLY)) - set(keys))
    assert not stale, f"probes or COMPATIBILITY_ONLY entries for keys the spec no longer has: {stale}"
    assert all(p.aspect in OBSERVERS for p in PROBES.values())
    counts = (
        f"effective {len(PROBES)}, refused when set {len(REFUSED)}, compatibility-only {len(COMPATIBILITY_ONLY)}, "
        f"one valid value {len(fixed)}"
    )
    print(f"\nkeys: {len(keys)}; {counts}")


@pytest.mark.parametrize("key", sorted(PROBES))
def test_key_changes_what_the_job_does(key, world, monkeypatch, tmp_path, baselines):
    probe = PROBES[key]
    given = list(probe.given)
    base_key = (probe.aspect, json.dumps(given, default=str))
    if base_key not in baselines:
        with monkeypatch.context() as m:
            baselines[base_key] = observe(probe.aspect, make_spec(world, given), world, m, tmp_path / "base")
    spec = make_spec(world, [*given, (key, probe.value), *probe.also])
    changed = observe(probe.aspect, spec, world, monkeypatch, tmp_path / "probe")
    assert changed != baselines[base_key], f"{key}={probe.value!r} does not change {probe.aspect}"


@pytest.fixture(scope="module")
def baselines() -> dict[Any, Any]:
    return {}


@pytest.mark.parametrize("key", sorted(COMPATIBILITY_ONLY))
def test_compatibility_only_key_warns_and_is_marked(key, world):
    props = dict(leaf_keys())
    assert props[key].get("x-compatibility-only") is True and COMPATIBILITY_ONLY[key] in props[key]["description"]
    special = {
        "encryption_key": ["encryption_key=secret"],
        "dataset.dataset_type": ["dataset.dataset_type=default"],
        "dataset.remap_mscoco_category": ["dataset.remap_mscoco_category=true", "dataset.num_classes=80"],
        "evaluate.gpu_ids": ["evaluate.gpu_ids=[1]"],
        "inference.gpu_ids": ["inference.gpu_ids=[1]"],
        "gen_trt_engine.input_width": ["gen_trt_engine.input_width=64"],
        "gen_trt_engine.input_height": ["gen_trt_engine.input_height=64"],
    }
    probe = PROBES.get(key.replace("distill.teacher.", "model."))
    value = next((v for suffix, v in COMPAT_VALUES.items() if key.endswith(f".{suffix}")), 2)
    setting = special.get(key) or [f"{key}={json.dumps(fill(probe.value if probe else value, world))}"]
    overrides = [f"{k}={json.dumps(v)}" for k, v in base_overrides(world).items() if v is not None]
    warnings = load_spec(None, [*overrides, *setting]).warnings
    mine = [w for w in warnings if f" {key} is set" in w]
    assert len(mine) == 1 and COMPATIBILITY_ONLY[key] in mine[0] and "secret" not in mine[0]
    assert not [w for w in load_spec(None, overrides).warnings if "compatibility" in w]


@pytest.mark.parametrize("key", sorted(REFUSED))
def test_refused_key_is_a_one_line_error_naming_it(key, world):
    overrides = [f"{k}={json.dumps(v)}" for k, v in base_overrides(world).items() if v is not None]
    load_spec(None, overrides)  # the default value loads
    with pytest.raises(RTDETRError) as error:
        load_spec(None, [*overrides, f"{key}={json.dumps(REFUSED[key])}"])
    assert key in str(error.value) and "\n" not in str(error.value)
