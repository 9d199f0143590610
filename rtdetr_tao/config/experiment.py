"""``ExperimentSpec``: the whole spec (the actions that read it: :mod:`rtdetr_tao.commands`)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import model_validator

from ..commands import ACTIONS, own_section
from .automl import AutoMLSpec
from .backbones import lr_backbone as official_lr_backbone
from .dataset import DatasetSpec, resolve_batch_size
from .deploy import GenTrtEngineSpec
from .distill import DistillSpec
from .fields import Section, spec_field
from .model import ModelSpec
from .quantize import QuantizeSpec
from .recipe import Recipe, recipe_num_epochs, resolve_recipe
from .tasks import EvaluateSpec, ExportSpec, InferenceSpec
from .train import TrainSpec


class WandBSpec(Section):
    """Weights & Biases logging of ``rtdetr train`` / ``distill`` (rank 0; needs the ``wandb`` extra). The run's files
    go to ``<results_dir>/wandb/``; WANDB_MODE=offline logs without a server."""

    enable: bool = spec_field(
        False, description="Log losses, lr and validation metrics to Weights & Biases; false: wandb is not touched."
    )
    project: str = spec_field("TAO Toolkit", description="W&B project.")
    entity: str | None = spec_field(None, description="W&B team or user; null: your default entity.")
    group: str | None = spec_field(None, description="W&B run group.")
    tags: list[str] = spec_field(["training", "tao-toolkit"], description="Run tags.", automl=False)
    reinit: bool = spec_field(False, description="wandb.init's reinit: allow several runs in one process.")
    sync_tensorboard: bool = spec_field(
        False, description="Mirror the TensorBoard events into W&B (instead of logging the scalars directly)."
    )
    save_code: bool = spec_field(False, description="Save the launching program's code with the run.")
    name: str = spec_field("TAO Toolkit training experiment", description="Run display name.")
    run_id: str | None = spec_field(
        None,
        description="Attach to (or resume) this W&B run id; null: a new run, whose id the checkpoints keep so that "
        "a resumed job continues it.",
    )


class ClearMLSpec(Section):
    """ClearML logging of ``rtdetr train`` / ``distill`` (TAO's ``ClearMLConfig``; rank 0; needs the ``clearml``
    extra). CLEARML_OFFLINE_MODE=1 logs without a server."""

    enable: bool = spec_field(
        False, description="Log losses, lr and validation metrics to ClearML; false: clearml is not touched."
    )
    project: str = spec_field("TAO Toolkit ClearML Demo", description="ClearML project.")
    task: str = spec_field("train", description="ClearML task name.")
    deferred_init: bool = spec_field(False, description="Task.init's deferred_init: connect in the background.")
    reuse_last_task_id: bool = spec_field(
        False, description="Task.init's reuse_last_task_id: overwrite the last task of this name if it has no output."
    )
    continue_last_task: bool = spec_field(
        False, description="Continue the last task of this name (a resumed job always continues its own task)."
    )
    tags: list[str] = spec_field(["training", "tao_toolkit"], description="Task tags.", automl=False)


class ExperimentSpec(Section):
    """Everything a job reads. Loaded once, validated, then frozen."""

    model_name: Literal["rtdetr"] = spec_field("rtdetr", description="Network identifier (TAO compatibility).")
    encryption_key: str | None = spec_field(None, description="TAO's model encryption key.", automl=False)
    results_dir: str = spec_field(
        "results",
        path="output",
        min_length=1,
        description="Root folder for everything a job writes (results_dir/<action>/).",
        automl=False,
    )
    wandb: WandBSpec = spec_field(WandBSpec(), description="Weights & Biases logging.", automl=False)
    clearml: ClearMLSpec = spec_field(ClearMLSpec(), description="ClearML logging.", automl=False)
    model: ModelSpec = spec_field(ModelSpec(), description="Architecture and loss settings.", automl=False)
    dataset: DatasetSpec = spec_field(DatasetSpec(), description="Data sources and loading.", automl=False)
    train: TrainSpec = spec_field(TrainSpec(), description="Training.", automl=False)
    evaluate: EvaluateSpec = spec_field(EvaluateSpec(), description="Evaluation.", automl=False)
    inference: InferenceSpec = spec_field(InferenceSpec(), description="Inference.", automl=False)
    export: ExportSpec = spec_field(ExportSpec(), description="ONNX export.", automl=False)
    gen_trt_engine: GenTrtEngineSpec = spec_field(
        GenTrtEngineSpec(), description="TensorRT engine build.", automl=False
    )
    quantize: QuantizeSpec = spec_field(QuantizeSpec(), description="Post-training quantization.", automl=False)
    distill: DistillSpec | None = spec_field(None, description="Distillation (rtdetr distill).", automl=False)
    automl: AutoMLSpec = spec_field(AutoMLSpec(), description="Hyper-parameter search (rtdetr automl).", automl=False)

    @model_validator(mode="before")
    @classmethod
    def _recipe_epochs(cls, data: Any) -> Any:
        return recipe_num_epochs(data) if isinstance(data, dict) else data

    @model_validator(mode="after")
    def _cross_section(self) -> ExperimentSpec:
        if self.model.num_select > self.model.num_queries * self.dataset.num_classes:
            raise ValueError(
                f"model.num_select={self.model.num_select} exceeds num_queries x num_classes = "
                f"{self.model.num_queries * self.dataset.num_classes}"
            )
        if self.dataset.remap_mscoco_category and self.dataset.num_classes not in (80, 91):
            raise ValueError(
                f"dataset.remap_mscoco_category maps COCO's ids to 80 labels, so dataset.num_classes must be 80 "
                f"(or TAO's 91), got {self.dataset.num_classes}"
            )
        clip = self.model.clip_max_norm
        if clip is not None and "clip_grad_norm" in self.train.model_fields_set and clip != self.train.clip_grad_norm:
            raise ValueError(
                f"model.clip_max_norm={clip} and train.clip_grad_norm={self.train.clip_grad_norm} disagree; "
                "set only train.clip_grad_norm"
            )
        return self

    # Derived values: computed here, once, and logged by the actions that use them.
    @property
    def lr_backbone(self) -> float:
        """``train.optim.lr_backbone``, or RT-DETRv2's scale-adaptive value for the backbone."""
        set_value = self.train.optim.lr_backbone
        return set_value if set_value is not None else official_lr_backbone(self.model.backbone)

    @property
    def clip_grad_norm(self) -> float:
        """Gradient clipping norm: ``train.clip_grad_norm`` unless only TAO's ``model.clip_max_norm`` is set."""
        if self.model.clip_max_norm is not None and "clip_grad_norm" not in self.train.model_fields_set:
            return self.model.clip_max_norm
        return self.train.clip_grad_norm

    def batch_size_for(self, action: str) -> int:
        """The batch size ``action`` runs with: its own section's ``batch_size`` (evaluate, inference and their
        deploy twins), else ``dataset.batch_size``, else AUTO_BATCH_SIZE, skipping every -1 (``resolve_batch_size``).
        Training, distillation, quantization and AutoML refuse ``dataset.batch_size: -1`` (their actions' rules)."""
        record = ACTIONS.get(action)
        own = getattr(self, own_section(action)).batch_size if record and record.own_batch_size else -1
        return resolve_batch_size(own, self.dataset.batch_size)

    @property
    def recipe(self) -> Recipe:
        """``train.recipe``'s values for the recipe keys left null (loss, schedule, Dense O2O augmentation)."""
        return resolve_recipe(self)

    @property
    def aug_stop_epoch(self) -> int:
        """First 0-based epoch without strong augmentation and multi-scale (dynamic augmentation)."""
        return self.recipe.aug_stop_epoch

    def action_dir(self, action: str) -> str:
        """``<action>.results_dir`` if the section sets one, else ``results_dir/<action>``."""
        section = getattr(self, own_section(action), None)
        own = getattr(section, "results_dir", None) if section is not None else None
        return own or f"{self.results_dir.rstrip('/')}/{action}"


def get_path(spec: Any, dotted: str) -> Any:
    """Value at a dotted path of a spec object (None when a section on the way is None)."""
    value = spec
    for part in dotted.split("."):
        if value is None:
            return None
        value = getattr(value, part)
    return value
