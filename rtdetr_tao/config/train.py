"""``train``: the training loop, optimizer, schedule and EMA (TAO's ``RTTrainExpConfig``)."""

from __future__ import annotations

from typing import Literal

from pydantic import model_validator

from .backbones import BACKBONES
from .fields import Section, spec_field

SCALE_ADAPTIVE_LR_BACKBONE = {name: entry.lr_backbone for name, entry in BACKBONES.items()}
"""RT-DETRv2's backbone learning rate per backbone (paper, Table 1; official HGNetv2 configs), used when
``lr_backbone`` is null; backbones without an official recipe (and ``timm:*``) use :data:`DEFAULT_LR_BACKBONE`."""


Goal = Literal["maximize", "minimize"]
Monitor = Literal["val_loss", "train_loss", "val_mAP", "val_mAP50"]
METRIC_GOALS: dict[str, Goal] = {
    "val_loss": "minimize",
    "train_loss": "minimize",
    "val_mAP": "maximize",
    "val_mAP50": "maximize",
}
"""Every metric a job can monitor, with the direction in which it improves."""


class OptimSpec(Section):
    """Optimizer and learning-rate schedule."""

    optimizer: Literal["AdamW", "SGD"] = spec_field("AdamW", description="Optimizer.")
    monitor_name: Monitor = spec_field(
        "val_loss", description="Metric that selects the best checkpoint and drives early stopping."
    )
    lr: float = spec_field(
        1e-4,
        gt=0.0,
        le=1.0,
        description="Learning rate of the encoder, decoder and heads.",
        automl=True,
        math_cond="> 0.0",
        search_range=(1e-5, 1e-3),
        log_scale=True,
    )
    lr_backbone: float | None = spec_field(
        None,
        gt=0.0,
        le=1.0,
        description="Backbone learning rate; null: RT-DETRv2's scale-adaptive value (1e-4 / 5e-5 / 1e-5 / 1e-6 "
        "for ResNet-18 / 34 / 50 / 101, 5e-6 / 1e-6 / 5e-6 for HGNetv2-L / X / H, 1e-5 otherwise).",
        automl=True,
        math_cond="> 0.0",
        search_range=(1e-6, 1e-4),
        log_scale=True,
    )
    momentum: float = spec_field(0.9, gt=0.0, lt=1.0, description="SGD momentum; AdamW's beta1.", math_cond="> 0.0")
    weight_decay: float = spec_field(
        1e-4,
        ge=0.0,
        le=1.0,
        description="Weight decay (not applied to norms and biases).",
        automl=True,
        search_range=(1e-5, 1e-2),
        log_scale=True,
    )
    lr_scheduler: Literal["MultiStep", "StepLR", "FlatCosine"] | None = spec_field(
        None,
        description="Learning-rate schedule; null: the recipe's (rtdetrv2: MultiStep; deim: FlatCosine, DEIM's "
        "flat-then-cosine schedule with a quadratic warm-up over warmup_steps that reaches lr x min_lr_factor at "
        "the augmentation stop epoch).",
    )
    lr_steps: list[int] = spec_field(
        [1000],
        description="MultiStep: 0-based epochs at which the learning rate is multiplied by lr_decay.",
        depends_on="train.num_epochs",
        math_cond="< depends_on",
    )
    lr_step_size: int = spec_field(
        1000,
        ge=1,
        le=10000,
        description="StepLR: epochs between decays.",
        automl=True,
        math_cond="> 0",
        search_range=(1, 100),
        log_scale=True,
    )
    lr_decay: float = spec_field(
        0.1,
        gt=0.0,
        le=1.0,
        description="Multiplicative learning-rate decay.",
        automl=True,
        math_cond="> 0.0",
        search_range=(0.05, 0.5),
        log_scale=True,
    )
    warmup_steps: int = spec_field(
        0,
        ge=0,
        description="Learning-rate warm-up, in optimizer steps: linear; quadratic under FlatCosine (DEIM's "
        "configs use 2000, configs/base/rt_deim.yml warmup_iter).",
    )
    flat_epochs: int | None = spec_field(
        None,
        ge=0,
        description="FlatCosine: epochs at the full learning rate before the cosine decay; null: the recipe's "
        "(DEIM's flat_epoch, 64 of 120 epochs for R18/R34, 34 of 60 for R50/R101, scaled to num_epochs).",
        depends_on="train.num_epochs",
        math_cond="< depends_on",
    )
    min_lr_factor: float = spec_field(
        0.5,
        gt=0.0,
        le=1.0,
        description="FlatCosine: the final learning rate as a fraction of lr (DEIM's lr_gamma, "
        "configs/base/rt_deim.yml).",
        math_cond="> 0.0",
        search_range=(0.05, 1.0),
    )

    @property
    def monitor_goal(self) -> Goal:
        """Whether ``monitor_name`` improves upwards (mAP) or downwards (losses)."""
        return METRIC_GOALS[self.monitor_name]

    @model_validator(mode="after")
    def _steps_sorted(self) -> OptimSpec:
        if any(s < 0 for s in self.lr_steps) or list(self.lr_steps) != sorted(self.lr_steps):
            raise ValueError(f"train.optim.lr_steps {self.lr_steps} must be non-negative and increasing")
        return self


class EMASpec(Section):
    """Exponential moving average of the weights."""

    decay: float = spec_field(
        0.999, gt=0.0, lt=1.0, description="EMA decay.", automl=True, math_cond="> 0.0", search_range=(0.99, 0.9999)
    )
    warmup_steps: int = spec_field(
        2000, ge=0, description="Decay warm-up: decay * (1 - exp(-updates / warmup_steps)); 0 disables."
    )
    every_n_steps: int = spec_field(1, ge=1, description="Optimizer steps between EMA updates.")
    validate_original_weights: bool = spec_field(False, description="Validate the raw weights instead of the EMA.")
    cpu_offload: bool = spec_field(False, description="Keep the EMA copy on the CPU (saves GPU memory, slower).")


class CudnnSpec(Section):
    """cuDNN switches."""

    benchmark: bool = spec_field(False, description="cuDNN autotuner.")
    deterministic: bool = spec_field(True, description="Deterministic cuDNN kernels.")


class CheckpointerSpec(Section):
    """TAO's best-checkpoint (top-k) saving: accepted so TAO specs load; enable_topk is not supported."""

    enable_topk: bool = spec_field(
        False, description="Keep the k best checkpoints by a metric: not supported here, must stay false."
    )
    replace_periodic: bool = spec_field(False, description="Used only with enable_topk.")
    monitor: str | None = spec_field(None, description="Used only with enable_topk.", automl=False)
    mode: Literal["min", "max"] | None = spec_field(None, description="Used only with enable_topk.")
    save_top_k: int = spec_field(1, ge=1, description="Used only with enable_topk.")
    filename: str = spec_field("model_best_{epoch:03d}", description="Used only with enable_topk.", automl=False)
    dirpath: str | None = spec_field(None, description="Used only with enable_topk.", automl=False)
    auto_insert_metric_name: bool = spec_field(False, description="Used only with enable_topk.")

    @model_validator(mode="after")
    def _not_built(self) -> CheckpointerSpec:
        if self.enable_topk:
            raise ValueError(
                "train.checkpointer.enable_topk=true is not supported: training keeps the periodic checkpoints and "
                "the best one by train.optim.monitor_name; set train.checkpointer.enable_topk=false"
            )
        return self


class TrainSpec(Section):
    """The training job."""

    recipe: Literal["rtdetrv2", "deim"] = spec_field(
        "rtdetrv2",
        description="Training recipe whose defaults fill the null keys: rtdetrv2 (the paper's) or deim (DEIM, "
        "CVPR 2025: mosaic + mixup (Dense O2O), the matchability-aware loss (mal) and the FlatCosine schedule; "
        "num_epochs, when not given, becomes DEIM's 120 for R18/R34 and 60 for R50/R101). See "
        "rtdetr_tao/config/recipe.py.",
        popular=True,
    )

    num_gpus: int = spec_field(1, ge=1, description="GPUs per node.", popular=True, automl=False)
    gpu_ids: list[int] = spec_field([0], description="GPU indices to use on each node.", popular=True, automl=False)
    num_nodes: int = spec_field(
        1, ge=1, description="Nodes; more than one means multi-node.", popular=True, automl=False
    )
    seed: int = spec_field(1234, ge=-1, description="Random seed; -1: no fixed seeding.", automl=False)
    cudnn: CudnnSpec = spec_field(CudnnSpec(), description="cuDNN switches.", automl=False)
    checkpointer: CheckpointerSpec = spec_field(
        CheckpointerSpec(),
        description="TAO's top-k checkpointing (not supported; enable_topk must be false).",
        automl=False,
    )
    num_epochs: int = spec_field(
        10, ge=1, description="Training epochs.", popular=True, automl=False, parent_param=True
    )
    checkpoint_interval: int = spec_field(1, ge=1, description="Save a checkpoint every N units.", popular=True)
    checkpoint_interval_unit: Literal["epoch", "step"] = spec_field("epoch", description="Unit of checkpoint_interval.")
    validation_interval: int = spec_field(1, ge=1, description="Epochs between validations.", popular=True)
    resume_training_checkpoint_path: str | None = spec_field(
        None,
        path="file",
        description="Checkpoint to resume from; null: resume from results_dir's latest, if any.",
        automl=False,
    )
    results_dir: str | None = spec_field(
        None, path="output", description="Output folder; null: results_dir/train.", automl=False
    )
    freeze: list[str] = spec_field(
        [], description="Module-name prefixes to freeze, e.g. backbone, encoder, decoder.", automl=False
    )
    pretrained_model_path: str | None = spec_field(
        None,
        path="file",
        description="Weights to start from: our checkpoint, an official RT-DETRv2 release, Hugging Face, or a "
        "weights-catalog name such as rtdetrv2_s_coco (rtdetr weights list).",
        automl=False,
    )
    strict_load: bool = spec_field(
        False,
        description="Refuse train.pretrained_model_path when it leaves more than half of the model's (or of its "
        "backbone's) tensors unloaded (another architecture); false: warn and train.",
        automl=False,
    )
    clip_grad_norm: float = spec_field(0.1, ge=0.0, description="Gradient L2-norm clipping; 0 disables it.")
    is_dry_run: bool = spec_field(
        False, description="Validate and print the spec without training (as --dry-run).", automl=False
    )
    enable_ema: bool = spec_field(False, description="Keep an exponential moving average of the weights.")
    ema: EMASpec = spec_field(EMASpec(), description="EMA settings.", automl=False)
    optim: OptimSpec = spec_field(OptimSpec(), description="Optimizer and schedule.", automl=False)
    precision: Literal["fp32", "fp16", "bf16"] = spec_field(
        "fp32", description="fp16 / bf16: mixed precision on GPU (fp32 on CPU)."
    )
    distributed_strategy: Literal["ddp"] = spec_field("ddp", description="Multi-GPU strategy (DDP).")
    sync_bn: bool = spec_field(True, description="Synchronise BatchNorm statistics when more than one GPU trains.")
    activation_checkpoint: bool = spec_field(
        True, description="Recompute encoder and decoder activations in backward to save memory."
    )
    early_stopping_patience: int | None = spec_field(
        None, ge=1, description="Stop after this many validations without improvement of monitor_name; null: off."
    )
    device: Literal["auto", "cpu", "cuda"] = spec_field(
        "auto", description="auto: CUDA when available, else CPU.", automl=False
    )
    plots: bool = spec_field(
        True,
        description="At the end, write report/ in the results folder: the evaluation report of the best "
        "validation (PR curves, confusion matrix, ..., report.html) and curves.png (val_mAP and losses per "
        "epoch). AutoML trials default to false.",
        automl=False,
    )

    @model_validator(mode="after")
    def _gpu_ids(self) -> TrainSpec:
        if "gpu_ids" in self.model_fields_set and len(self.gpu_ids) != self.num_gpus:
            raise ValueError(
                f"train.gpu_ids {self.gpu_ids} must list num_gpus={self.num_gpus} devices, e.g. "
                f"{list(range(self.num_gpus))}"
            )
        return self

    @property
    def device_ids(self) -> list[int]:
        """GPU indices per node: ``gpu_ids`` when set, else 0..num_gpus-1."""
        return list(self.gpu_ids) if "gpu_ids" in self.model_fields_set else list(range(self.num_gpus))
