"""``distill``: teacher-student training (TAO's ``RTDistillationConfig``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import field_validator, model_validator

from .fields import Section, spec_field
from .model import ModelSpec

IOU_FEATURES = ("srcs", "dsrcs")


class BindingSpec(Section):
    """Binds a student output to a teacher output with a criterion."""

    student_module_name: str = spec_field(
        ..., min_length=1, description="Student output: srcs, dsrcs, pred_logits, ..."
    )
    teacher_module_name: str = spec_field(..., min_length=1, description="Teacher output to imitate.")
    criterion: Literal["IOU", "L1", "L2", "MSE", "KL"] = spec_field(
        ...,
        description="IOU: feature imitation under the teacher's score x IoU query mask (srcs/dsrcs only); "
        "L1, L2/MSE: feature distances; KL: class-logit distillation with temperature.",
        schema_extra={"enum": ["IOU", "L1", "L2", "MSE", "KL", "iou", "l1", "l2", "mse", "kl"]},
    )
    weight: float = spec_field(1.0, ge=0.0, description="Scale of this binding's loss.")
    temperature: float = spec_field(1.0, gt=0.0, description="KL: softening temperature.")

    @field_validator("criterion", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _iou_on_features(self) -> BindingSpec:
        if self.criterion == "IOU" and (
            self.student_module_name not in IOU_FEATURES or self.student_module_name != self.teacher_module_name
        ):
            raise ValueError(
                f"an IOU binding needs the same feature list on both sides, one of {list(IOU_FEATURES)}; got "
                f"student '{self.student_module_name}' and teacher '{self.teacher_module_name}'"
            )
        return self


class DistillSpec(Section):
    """``rtdetr distill``."""

    teacher: ModelSpec = spec_field(
        ModelSpec(),
        description="Teacher architecture (must match its checkpoint, so AutoML never tunes it).",
        automl=False,
        schema_extra={"automl_frozen": True},
    )
    pretrained_teacher_model_path: str | None = spec_field(
        None,
        path="file",
        description="Trained teacher weights (any format rtdetr loads, or a weights-catalog name).",
        automl=False,
    )
    bindings: list[BindingSpec] = spec_field(
        [BindingSpec(student_module_name="srcs", teacher_module_name="srcs", criterion="IOU")],
        min_length=1,
        description="Student-teacher output pairs and their losses.",
        automl=False,
    )
    results_dir: str | None = spec_field(
        None, path="output", description="Output folder; null: results_dir/distill.", automl=False
    )
