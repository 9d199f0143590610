"""``model``: architecture and loss settings (TAO's ``RTModelConfig`` plus RT-DETRv2 keys)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import field_validator, model_validator

from .backbones import BACKBONES, check_backbone
from .fields import Section, spec_field

Preset = Literal["s", "m", "m_star", "l", "x", "hgnetv2_l", "hgnetv2_x", "hgnetv2_h"]

PRESETS: dict[str, dict[str, Any]] = {
    # The paper's five sizes, as the reference configs define them (rtdetrv2_r*vd_*.yml).
    "s": {"backbone": "resnet_18", "freeze_at": -1, "freeze_norm": False, "expansion": 0.5, "dec_layers": 3},
    "m": {"backbone": "resnet_34", "freeze_at": -1, "freeze_norm": False, "expansion": 0.5, "dec_layers": 4},
    "m_star": {"backbone": "resnet_50", "expansion": 0.5, "dec_layers": 6, "eval_idx": 2},
    "l": {"backbone": "resnet_50"},
    "x": {
        "backbone": "resnet_101",
        "enc_hidden_dim": 384,
        "dim_feedforward": 2048,
        "feat_channels": [384, 384, 384],
    },
    # rtdetrv2_hgnetv2_{l,x,h}_6x_coco.yml: the R50 recipe with the HGNetv2 backbone (frozen stem, frozen norms);
    # X widens the encoder to 384, H to 512 with two AIFI layers. Backbone lr: config.backbones.BACKBONES.
    "hgnetv2_l": {"backbone": "hgnetv2_l"},
    "hgnetv2_x": {
        "backbone": "hgnetv2_x",
        "enc_hidden_dim": 384,
        "dim_feedforward": 2048,
        "feat_channels": [384, 384, 384],
    },
    "hgnetv2_h": {
        "backbone": "hgnetv2_h",
        "enc_hidden_dim": 512,
        "dim_feedforward": 2048,
        "enc_layers": 2,
        "feat_channels": [512, 512, 512],
    },
}
"""Values a ``model.preset`` fills in for the keys the spec does not set itself."""

TAO_BACKBONE_ALIASES = {"backbone.0": "backbone"}
"""TAO names the backbone module ``backbone.0``; ours is ``backbone``."""


class FrozenFMSpec(Section):
    """TAO's frozen foundation-model branch (RADIO beside the backbone): accepted so TAO specs load; not built."""

    enabled: bool = spec_field(
        False, description="Add a frozen foundation model beside the backbone: not supported here, must stay false."
    )
    backbone: Literal["radio_v2-b", "radio_v2-l", "radio_v2-h"] = spec_field(
        "radio_v2-l", description="Foundation model (used only when enabled)."
    )
    checkpoint: str | None = spec_field(
        None, path="file", description="Foundation-model weights (used only when enabled).", automl=False
    )

    @field_validator("enabled")
    @classmethod
    def _not_built(cls, enabled: bool) -> bool:
        if enabled:
            raise ValueError("not supported: rtdetr_tao has no frozen foundation-model (RADIO) branch; set it to false")
        return enabled


class ModelSpec(Section):
    """RT-DETRv2 architecture, denoising, matching and loss settings."""

    preset: Preset | None = spec_field(
        None,
        description="Official RT-DETRv2 size whose settings fill every model key this spec leaves unset: "
        "s (R18), m (R34), m_star (R50, expansion 0.5, eval_idx 2), l (R50), x (R101), "
        "hgnetv2_l / hgnetv2_x / hgnetv2_h (HGNetv2, encoder width 256 / 384 / 512). null: use the keys as given.",
        automl=False,
    )
    pretrained_backbone_path: str | None = spec_field(
        None,
        path="file",
        description="Backbone weights: official PResNet-vd / HGNetv2 ImageNet weights, a timm checkpoint, a state "
        "dict, or a weights-catalog name (rtdetr weights list).",
        automl=False,
    )
    backbone: str = spec_field(
        "resnet_50",
        description="Backbone: resnet_18/34/50/101 (ResNet-vd), hgnetv2_l/x/h (official RT-DETRv2 HGNetv2), "
        "convnext_tiny/small/base/large/xlarge, efficientvit_b0..b3 / l0..l3 (timm), fan_tiny/small/base/large (TAO's "
        "FAN hybrids), or timm:<timm model name> (any timm model with features_only).",
        automl=False,
        schema_extra={"examples": list(BACKBONES)},
    )
    train_backbone: bool = spec_field(True, description="False freezes every backbone parameter.")
    freeze_at: int = spec_field(
        0,
        ge=-1,
        le=4,
        description="Freeze the backbone stem (0) and stages 1..N; -1 freezes nothing (RT-DETRv2-S/M).",
    )
    freeze_norm: bool = spec_field(
        True, description="Replace the backbone's BatchNorm layers by frozen BatchNorm (off for RT-DETRv2-S/M)."
    )
    load_teacher_enc_dec: bool = spec_field(
        False, description="Distillation: start the student's encoder and decoder from the teacher where shapes fit."
    )
    num_queries: int = spec_field(
        300,
        ge=1,
        le=3000,
        description="Number of decoder object queries.",
        automl=True,
        parent_param=True,
        search_range=(100, 500),
    )
    num_select: int = spec_field(
        300,
        ge=1,
        le=3000,
        description="Top-K detections kept by the post-processor.",
        automl=True,
        depends_on="model.num_queries",
        math_cond="<= depends_on",
        search_range=(50, 300),
    )
    num_feature_levels: int = spec_field(
        3,
        ge=1,
        le=4,
        description="Feature levels the decoder attends to; levels beyond the backbone's are made by "
        "stride-2 convolutions.",
    )
    return_interm_indices: list[int] = spec_field(
        [1, 2, 3], min_length=1, max_length=4, description="Backbone stages (0..3) fed to the encoder.", automl=False
    )
    feat_strides: list[int] = spec_field(
        [8, 16, 32], min_length=1, max_length=4, description="Stride of each encoder input level.", automl=False
    )
    feat_channels: list[int] = spec_field(
        [256, 256, 256],
        min_length=1,
        max_length=4,
        description="Channels of each decoder input level (the encoder's output width).",
        automl=False,
    )
    use_encoder_idx: list[int] = spec_field(
        [2], min_length=1, description="Levels that go through the transformer encoder (AIFI).", automl=False
    )
    hidden_dim: int = spec_field(
        256, ge=8, description="Decoder width (and encoder width unless enc_hidden_dim is set).", automl=False
    )
    enc_hidden_dim: int | None = spec_field(
        None, ge=8, description="Hybrid-encoder width; null: hidden_dim. RT-DETRv2-X uses 384.", automl=False
    )
    nheads: int = spec_field(8, ge=1, description="Attention heads in the encoder and decoder.")
    dropout_ratio: float = spec_field(0.0, ge=0.0, le=1.0, description="Dropout probability.")
    enc_layers: int = spec_field(
        1, ge=1, le=12, description="Transformer encoder (AIFI) layers.", automl=True, search_range=(1, 3)
    )
    dim_feedforward: int = spec_field(1024, ge=1, description="Feed-forward width of the encoder.")
    dec_dim_feedforward: int = spec_field(1024, ge=1, description="Feed-forward width of the decoder.")
    pe_temperature: int = spec_field(10000, ge=1, description="Temperature of the sine positional encoding.")
    expansion: float = spec_field(1.0, gt=0.0, description="Hidden expansion ratio of the CSPRep layers.")
    depth_mult: float = spec_field(
        1.0, gt=0.0, description="Depth multiplier of the CSPRep layers (3 RepVGG blocks at 1.0)."
    )
    enc_act: Literal["gelu", "relu", "silu"] = spec_field("gelu", description="Activation in the encoder layers.")
    act: Literal["silu", "relu", "gelu"] = spec_field("silu", description="Activation in the CCFM (FPN/PAN) blocks.")
    dec_layers: int = spec_field(6, ge=1, le=12, description="Decoder layers.", automl=True, search_range=(3, 6))
    dn_number: int = spec_field(100, ge=0, description="Denoising queries in training; 0 disables denoising.")
    label_noise_ratio: float = spec_field(0.5, ge=0.0, le=1.0, description="Share of denoising labels flipped.")
    box_noise_scale: float = spec_field(1.0, ge=0.0, description="Scale of the denoising box noise.")
    eval_idx: int = spec_field(-1, ge=-1, description="Decoder layer whose output is used at inference; -1 = last.")
    num_points: int | list[int] = spec_field(
        4,
        description="Deformable-attention sampling points per level: one number for every level, or a list "
        "with one entry per feature level, e.g. [3, 6, 3].",
    )
    cross_attn_method: Literal["default", "discrete"] = spec_field(
        "default",
        description="Deformable sampling: default = bilinear grid_sample; discrete = rounded offsets "
        "(no grid_sample in the exported graph, no gradient to the offset projection).",
    )
    query_select_method: Literal["default", "agnostic"] = spec_field(
        "default", description="Encoder top-k query selection: by best class score (default) or class-agnostic."
    )
    vfl_loss_coef: float = spec_field(1.0, ge=0.0, description="Weight of the varifocal classification loss.")
    bbox_loss_coef: float = spec_field(5.0, ge=0.0, description="Weight of the L1 box loss.")
    giou_loss_coef: float = spec_field(2.0, ge=0.0, description="Weight of the GIoU loss.")
    class_cost: float = spec_field(2.0, ge=0.0, description="Class term of the Hungarian matching cost.")
    bbox_cost: float = spec_field(5.0, ge=0.0, description="L1 box term of the Hungarian matching cost.")
    giou_cost: float = spec_field(2.0, ge=0.0, description="GIoU term of the Hungarian matching cost.")
    alpha: float = spec_field(0.75, gt=0.0, description="Varifocal loss alpha.", math_cond="> 0.0")
    gamma: float = spec_field(2.0, gt=0.0, description="Varifocal loss gamma.", math_cond="> 0.0")
    matcher_alpha: float = spec_field(0.25, gt=0.0, description="Focal alpha of the matcher's class cost.")
    matcher_gamma: float = spec_field(2.0, gt=0.0, description="Focal gamma of the matcher's class cost.")
    clip_max_norm: float | None = spec_field(
        None, ge=0.0, description="TAO alias of train.clip_grad_norm; null: use train.clip_grad_norm."
    )
    aux_loss: bool = spec_field(True, description="Add the losses of every decoder layer and of the encoder proposals.")
    loss_types: list[Literal["vfl", "mal", "boxes"]] | None = spec_field(
        None,
        min_length=1,
        description="Loss terms: vfl (varifocal) or mal (DEIM's matchability-aware) classification, and boxes "
        "(L1 + GIoU); null: the recipe's (rtdetrv2: [vfl, boxes]; deim: [mal, boxes], DEIM's "
        "configs/base/rt_deim.yml DEIMCriterion.losses).",
        automl=False,
    )
    mal_loss_coef: float = spec_field(
        1.0, ge=0.0, description="Weight of the mal classification loss (DEIM's weight_dict.loss_mal)."
    )
    mal_gamma: float = spec_field(
        1.5,
        gt=0.0,
        description="mal gamma: the target is IoU^gamma, negatives are weighted by score^gamma (DEIM's "
        "DEIMCriterion.gamma in configs/base/rt_deim.yml).",
        math_cond="> 0.0",
        search_range=(0.5, 3.0),
    )
    mal_alpha: float | None = spec_field(
        None,
        gt=0.0,
        description="mal: extra weight of the negatives (DEIM's mal_alpha); null: none, as DEIM's configs.",
    )
    backbone_names: list[str] = spec_field(
        ["backbone"],
        min_length=1,
        description="Parameter-name prefixes trained with train.optim.lr_backbone (TAO's 'backbone.0' = 'backbone').",
        automl=False,
    )
    linear_proj_names: list[str] = spec_field(
        ["reference_points", "sampling_offsets"],
        description="Parameter-name parts whose learning rate is multiplied by lr_linear_proj_mult.",
        automl=False,
    )
    lr_linear_proj_mult: float = spec_field(
        1.0, gt=0.0, description="Learning-rate multiplier of linear_proj_names parameters (1.0 = reference recipe)."
    )
    distillation_loss_coef: float = spec_field(
        1.0, ge=0.0, description="rtdetr distill: factor on every binding's loss (on top of its weight)."
    )
    precise_msda: bool = spec_field(
        False,
        description="TAO compatibility: deformable attention here is always the pure-PyTorch (grid_sample) "
        "implementation that TAO's precise_msda selects, so both values run the same code.",
    )
    frozen_fm: FrozenFMSpec = spec_field(
        FrozenFMSpec(),
        description="TAO's frozen foundation-model branch: not supported (enabled must be false).",
        automl=False,
    )

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("preset"), str) and data["preset"] in PRESETS:
            data = {**PRESETS[data["preset"]], **data}
        if isinstance(data, dict) and "backbone_names" in data and isinstance(data["backbone_names"], list):
            names = [TAO_BACKBONE_ALIASES.get(n, n) if isinstance(n, str) else n for n in data["backbone_names"]]
            data = {**data, "backbone_names": names}
        return data

    @field_validator("backbone")
    @classmethod
    def _check_backbone(cls, value: str) -> str:
        return check_backbone(value)

    @model_validator(mode="after")
    def _check_levels(self) -> ModelSpec:
        n_in = len(self.return_interm_indices)
        if any(not 0 <= i <= 3 for i in self.return_interm_indices) or sorted(set(self.return_interm_indices)) != list(
            self.return_interm_indices
        ):
            raise ValueError(
                f"model.return_interm_indices {self.return_interm_indices} must be increasing backbone stages in 0..3"
            )
        if len(self.feat_strides) != n_in:
            raise ValueError(
                f"model.feat_strides has {len(self.feat_strides)} entries but return_interm_indices has {n_in}; "
                "give one stride per backbone level"
            )
        expected_strides = [2 ** (i + 2) for i in self.return_interm_indices]
        if list(self.feat_strides) != expected_strides:
            raise ValueError(
                f"model.feat_strides {self.feat_strides} do not match return_interm_indices "
                f"{self.return_interm_indices}; the strides of those backbone stages are {expected_strides}"
            )
        if len(self.feat_channels) != n_in:
            raise ValueError(
                f"model.feat_channels has {len(self.feat_channels)} entries but return_interm_indices has {n_in}"
            )
        width = self.encoder_width
        if any(c != width for c in self.feat_channels):
            raise ValueError(
                f"model.feat_channels {self.feat_channels} must all equal the encoder width {width} "
                "(the decoder reads the encoder's outputs); set feat_channels or enc_hidden_dim"
            )
        if any(not 0 <= i < n_in for i in self.use_encoder_idx):
            raise ValueError(f"model.use_encoder_idx {self.use_encoder_idx} must index levels 0..{n_in - 1}")
        if self.num_feature_levels < n_in:
            raise ValueError(
                f"model.num_feature_levels={self.num_feature_levels} is smaller than the {n_in} levels in "
                "return_interm_indices"
            )
        if isinstance(self.num_points, list) and len(self.num_points) != self.num_feature_levels:
            raise ValueError(
                f"model.num_points {self.num_points} needs one entry per feature level "
                f"(num_feature_levels={self.num_feature_levels})"
            )
        if any(p < 1 for p in self.points_per_level):
            raise ValueError(f"model.num_points {self.num_points} must be >= 1 at every level")
        if self.eval_idx >= self.dec_layers:
            raise ValueError(f"model.eval_idx={self.eval_idx} must be -1 or below dec_layers={self.dec_layers}")
        if self.hidden_dim % self.nheads or width % self.nheads:
            raise ValueError(f"model.hidden_dim and the encoder width must be divisible by nheads={self.nheads}")
        return self

    @property
    def encoder_width(self) -> int:
        """Width of the hybrid encoder (``enc_hidden_dim`` or ``hidden_dim``)."""
        return self.enc_hidden_dim or self.hidden_dim

    @property
    def points_per_level(self) -> list[int]:
        """``num_points`` expanded to one entry per decoder feature level."""
        if isinstance(self.num_points, int):
            return [self.num_points] * self.num_feature_levels
        return list(self.num_points)
