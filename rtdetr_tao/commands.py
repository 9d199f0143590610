"""Every action, declared once: :data:`ACTIONS`.

A record holds what the rest of the code needs to know about an action: the command that runs it, the module
that does the work, the spec sections it reads, the keys it cannot run without, its further checks, whether it
is a training job (torchrun) and its help. The ``rtdetr`` and ``rtdetr-deploy`` command lines, spec loading
(required keys and rules are checked when the spec is loaded, before the action's module is imported), the JSON
schemas and spec templates, and TAO's skill bank all read it.

Adding an action: write its module (``run(spec)``) and add its record here. This module stays free of torch
and of the spec models, so that ``rtdetr --help`` stays quick (``rtdetr-deploy`` reads it too).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config.experiment import ExperimentSpec

Rule = Callable[["ExperimentSpec"], "str | None"]
"""A check beyond the required keys: an error message, or None when the spec is fine."""

TRAINING_SECTIONS = ("results_dir", "wandb", "clearml", "model", "dataset", "train")


@dataclass(frozen=True)
class Action:
    """One action of ``rtdetr`` or ``rtdetr-deploy``.

    ``sections`` empty: the action takes no experiment spec (``-e`` optional); the CLI calls
    ``module.main(spec_path, overrides, **flags)`` instead of loading a spec and calling ``module.run(spec)``.
    """

    command: str
    """The command line that runs it: ``rtdetr train``, ``rtdetr-deploy evaluate``."""
    module: str
    """The module whose ``run(spec)`` does the work."""
    help: str
    """One line for ``--help``."""
    description: str = ""
    """One line for its JSON schema, spec template and the manifest."""
    sections: tuple[str, ...] = ()
    """The top-level spec keys it reads: what its template shows."""
    required: tuple[str, ...] = ()
    """Keys it cannot run without (``???`` in its template, ``required`` in its schema), checked at load time."""
    rules: tuple[Rule, ...] = ()
    """Further load-time checks."""
    section: str = ""
    """Its own section (``results_dir``, and ``batch_size`` with ``own_batch_size``); empty: the action's name."""
    own_batch_size: bool = False
    """Its own section's ``batch_size`` overrides ``dataset.batch_size``."""
    distributed: bool = False
    """A training job: ``train.num_gpus`` / ``num_nodes`` / WORLD_SIZE relaunch it through torchrun, and
    ``train.is_dry_run`` prints the spec instead of training (as ``--dry-run``)."""
    skill: bool = False
    """TAO's AutoML runner may launch it as a python_script (:mod:`rtdetr_tao.config.tao_skill`)."""
    flags: tuple[tuple[str, str], ...] = ()
    """Extra ``--name`` switches of an action without a spec, with their help, passed to ``main`` by name."""

    @property
    def prog(self) -> str:
        """The console script: ``rtdetr`` or ``rtdetr-deploy``."""
        return self.command.split()[0]

    @property
    def verb(self) -> str:
        """The action's word on its command line."""
        return self.command.split()[1]


def _positive_batch(spec: ExperimentSpec) -> str | None:
    if spec.dataset.batch_size < 1:
        return "dataset.batch_size=-1 is only for evaluate, inference and deploy; set a positive batch size"
    return None


def _distill_section(spec: ExperimentSpec) -> str | None:
    return None if spec.distill is not None else "the spec has no 'distill' section"


ACTIONS: dict[str, Action] = {
    "train": Action(
        "rtdetr train",
        "rtdetr_tao.actions.train",
        help="Train a model.",
        description="Train a model.",
        sections=TRAINING_SECTIONS,
        required=("dataset.train_data_sources",),
        rules=(_positive_batch,),
        distributed=True,
        skill=True,
    ),
    "evaluate": Action(
        "rtdetr evaluate",
        "rtdetr_tao.actions.evaluate",
        help="COCO metrics of a checkpoint.",
        description="COCO metrics of a checkpoint on dataset.test_data_sources.",
        sections=("results_dir", "model", "dataset", "evaluate"),
        required=("evaluate.checkpoint", "dataset.test_data_sources"),
        own_batch_size=True,
        skill=True,
    ),
    "inference": Action(
        "rtdetr inference",
        "rtdetr_tao.actions.inference",
        help="Detections on images.",
        description="Detections on images: annotated images, KITTI labels, COCO JSON.",
        sections=("results_dir", "model", "dataset", "inference"),
        required=("inference.checkpoint", "dataset.infer_data_sources"),
        own_batch_size=True,
        skill=True,
    ),
    "export": Action(
        "rtdetr export",
        "rtdetr_tao.actions.export",
        help="Export a checkpoint to ONNX.",
        description="Export a checkpoint to ONNX.",
        sections=("results_dir", "model", "dataset", "export"),
        required=("export.checkpoint", "export.onnx_file"),
        skill=True,
    ),
    "quantize": Action(
        "rtdetr quantize",
        "rtdetr_tao.actions.quantize",
        help="Post-training quantization (ModelOpt).",
        description="Post-training quantization with NVIDIA ModelOpt.",
        sections=("results_dir", "model", "dataset", "quantize"),
        required=("quantize.model_path", "dataset.quant_calibration_data_sources"),
        rules=(_positive_batch,),
        skill=True,
    ),
    "distill": Action(
        "rtdetr distill",
        "rtdetr_tao.actions.distill",
        help="Train a student from a frozen teacher.",
        description="Train a student model from a frozen teacher.",
        sections=(*TRAINING_SECTIONS, "distill"),
        required=("dataset.train_data_sources", "distill.pretrained_teacher_model_path"),
        rules=(_positive_batch, _distill_section),
        distributed=True,
        skill=True,
    ),
    "automl": Action(
        "rtdetr automl",
        "rtdetr_tao.actions.automl",
        help="Hyper-parameter search (trials are train runs).",
        description="Hyper-parameter search: trials are rtdetr train runs sampled from the train schema.",
        sections=(*TRAINING_SECTIONS, "automl"),
        required=("dataset.train_data_sources", "dataset.val_data_sources"),
        rules=(_positive_batch,),
    ),
    "default_specs": Action(
        "rtdetr default_specs",
        "rtdetr_tao.actions.default_specs",
        help="Write spec templates and JSON schemas.",
        flags=(
            ("check", "Fail if the files differ instead of writing."),
            ("skill", "Write TAO's skill-bank layout (for TAO's AutoML runner) instead."),
        ),
    ),
    "gen_trt_engine": Action(
        "rtdetr-deploy gen_trt_engine",
        "rtdetr_deploy.actions.gen_trt_engine",
        help="Build a TensorRT engine from an exported ONNX.",
        description="rtdetr-deploy: build a TensorRT engine from the ONNX file.",
        sections=("results_dir", "dataset", "gen_trt_engine"),
        required=("gen_trt_engine.onnx_file", "gen_trt_engine.trt_engine"),
    ),
    "deploy_evaluate": Action(
        "rtdetr-deploy evaluate",
        "rtdetr_deploy.actions.evaluate",
        help="COCO metrics of an engine or ONNX file.",
        description="rtdetr-deploy evaluate: COCO metrics of an engine or ONNX file.",
        sections=("results_dir", "dataset", "evaluate"),
        required=("evaluate.trt_engine", "dataset.test_data_sources"),
        section="evaluate",
        own_batch_size=True,
    ),
    "deploy_inference": Action(
        "rtdetr-deploy inference",
        "rtdetr_deploy.actions.inference",
        help="Detections from an engine or ONNX file.",
        description="rtdetr-deploy inference: detections from an engine or ONNX file.",
        sections=("results_dir", "dataset", "inference"),
        required=("inference.trt_engine", "dataset.infer_data_sources"),
        section="inference",
        own_batch_size=True,
    ),
}
"""Every action by its name (``results_dir/<name>/`` is its output folder), in help and schema order."""

SPEC_ACTIONS: tuple[str, ...] = tuple(name for name, action in ACTIONS.items() if action.sections)
"""The actions that take an experiment spec: one schema and one template each."""


def commands(prog: str) -> dict[str, str]:
    """The actions of the console script ``prog``: their word on its command line → their name."""
    return {action.verb: name for name, action in ACTIONS.items() if action.prog == prog}


def own_section(action: str) -> str:
    """The spec section that holds ``action``'s own settings (its name when it is no declared action)."""
    record = ACTIONS.get(action)
    return (record.section if record else "") or action
