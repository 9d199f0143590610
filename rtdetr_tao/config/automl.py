"""``automl``: hyper-parameter search over the train spec (``rtdetr automl``).

The search space is not described here: it comes from the train schema (bounds, enums, option
weights, ``math_cond``, ``depends_on`` and the ``automl_search_range`` hints). This section says
which keys to search, how, and for how long.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import field_validator, model_validator

from .fields import Section, spec_field
from .train import METRIC_GOALS, Goal

METRIC_ALIASES = {"mAP": "val_mAP", "mAP50": "val_mAP50"}


class AutoMLSpec(Section):
    """Hyper-parameter search: every trial is a real ``rtdetr train`` run in ``results_dir/automl/trial_NNN/``."""

    algorithm: Literal["random", "bayesian", "hyperband"] = spec_field(
        "bayesian",
        description="random: Optuna's RandomSampler; bayesian: TPE; hyperband: TPE plus Hyperband pruning of weak "
        "trials on their per-epoch validation metric.",
    )
    num_trials: int = spec_field(
        10, ge=1, description="Trials in the study (completed, pruned and failed ones count; shared by all workers)."
    )
    metric: Literal["val_mAP", "val_mAP50", "val_loss"] = spec_field(
        "val_mAP",
        description="Validation KPI a trial is judged by (its last validation in train/status.json).",
        schema_extra={"enum": ["val_mAP", "val_mAP50", "val_loss", "mAP", "mAP50"]},
    )
    direction: Goal | None = spec_field(
        None, description="null: maximize for val_mAP / val_mAP50, minimize for val_loss."
    )
    parameters: list[str] | None = spec_field(
        None,
        description="Dotted train-spec keys to search; null: the schema's automl_default_parameters. Keys in "
        "automl_disabled_parameters are refused.",
        automl=False,
    )
    ranges: dict[str, list[float]] = spec_field(
        {},
        description="Narrower [low, high] per key (inside the schema's bounds), e.g. {train.optim.lr: [1e-5, 1e-3]}; "
        "replaces the schema's automl_search_range hint.",
        automl=False,
    )
    enqueue_trials: list[dict[str, Any]] = spec_field(
        [],
        description="Configurations to try first, as {dotted key: value} (e.g. known good settings); queued when the "
        "study is created.",
        automl=False,
    )
    storage: str | None = spec_field(
        None,
        description="Optuna storage URL shared by every worker of the study (e.g. postgresql://...); null: SQLite "
        "at results_dir/automl/study.db.",
    )
    study_name: str = spec_field("rtdetr_automl", min_length=1, description="Study name inside the storage.")
    seed: int = spec_field(
        0,
        ge=0,
        description="Sampler seed (offset by the trials already in the study); give each worker of a shared study its "
        "own, e.g. automl.seed=$RANK.",
    )
    timeout: float | None = spec_field(
        None, gt=0, description="Seconds after which this worker starts no new trial; null: no limit."
    )
    results_dir: str | None = spec_field(
        None, path="output", description="Output folder; null: results_dir/automl.", automl=False
    )
    hyperband_min_epochs: int = spec_field(
        1, ge=1, description="hyperband: epochs every trial trains before it may be pruned."
    )
    hyperband_reduction_factor: int = spec_field(
        3, ge=2, description="hyperband: 1/factor of the trials go on at each rung."
    )

    @field_validator("metric", mode="before")
    @classmethod
    def _metric_alias(cls, value: Any) -> Any:
        return METRIC_ALIASES.get(value, value) if isinstance(value, str) else value

    @field_validator("ranges")
    @classmethod
    def _ranges(cls, value: dict[str, list[float]]) -> dict[str, list[float]]:
        for key, bounds in value.items():
            if len(bounds) != 2 or not bounds[0] <= bounds[1]:
                raise ValueError(f"automl.ranges.{key} must be [low, high] with low <= high, got {bounds}")
        return value

    @model_validator(mode="after")
    def _unique_parameters(self) -> AutoMLSpec:
        if self.parameters is not None:
            if not self.parameters:
                raise ValueError("automl.parameters is empty; list dotted keys or use null for the schema's defaults")
            repeated = sorted({p for p in self.parameters if self.parameters.count(p) > 1})
            if repeated:
                raise ValueError(f"automl.parameters lists {', '.join(repeated)} more than once")
        return self

    @property
    def goal(self) -> Goal:
        """The direction, derived from the metric when not set."""
        if self.direction is not None:
            return self.direction
        return METRIC_GOALS[self.metric]
