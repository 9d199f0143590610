"""Backbones built by timm (``features_only``): TAO's ConvNeXt and EfficientViT values and ``timm:<model name>``."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import SpecError, require

STAGE_STRIDES = (4, 8, 16, 32)
"""Stride of backbone stage 0..3; ``return_idx`` picks the timm feature levels with these reductions."""


class TimmBackbone(nn.Module):
    """A timm ``features_only`` model returning the stages at strides 4 / 8 / 16 / 32 selected by ``return_idx``.

    Args:
        arch: timm model name (``convnext_tiny``, ``efficientvit_b0``, any model with ``features_only``).
        return_idx: stages (0..3, strides 4/8/16/32) whose outputs are returned.
        freeze_at: -1 freezes nothing; ``n >= 0`` freezes everything before stage 0 (the stem) and stages 0..n-1.
        freeze_norm: replace every BatchNorm by timm's frozen BatchNorm (LayerNorms stay trainable).
        model_args: architecture arguments for ``timm.create_model``.

    The timm model sits at ``body``; timm flattens its top-level sequential modules (``stages.0`` becomes
    ``stages_0``), which :meth:`adapt_state_dict` undoes for checkpoints saved from the plain timm model; it also
    translates the original authors' layouts that TAO uses (:data:`FOREIGN_LAYOUTS`).
    """

    def __init__(
        self,
        arch: str,
        return_idx: list[int] = (1, 2, 3),
        freeze_at: int = -1,
        freeze_norm: bool = False,
        model_args: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        timm = require("timm", extra="backbones", purpose=f"the {arch} backbone")
        if not timm.is_model(arch.split(".")[0]):
            raise SpecError(
                f"model.backbone: timm has no model {arch!r} (timm {timm.__version__}); see timm.list_models()"
            )
        args = dict(model_args or {})
        with torch.device("meta"):  # feature strides without allocating weights
            reductions = timm.create_model(arch, pretrained=False, features_only=True, **args).feature_info.reduction()
        missing = [STAGE_STRIDES[i] for i in return_idx if STAGE_STRIDES[i] not in reductions]
        if missing:
            raise SpecError(
                f"model.backbone: timm model {arch} has feature levels at strides {reductions}, none at "
                f"{missing}; choose model.return_interm_indices whose strides (4, 8, 16, 32 for stages 0..3) "
                "the model provides"
            )
        out_indices = [reductions.index(STAGE_STRIDES[i]) for i in return_idx]
        self.body = timm.create_model(arch, pretrained=False, features_only=True, out_indices=out_indices, **args)
        self.arch, self.model_args = arch, args
        self.return_idx = list(return_idx)
        self.out_channels = list(self.body.feature_info.channels())
        self.out_strides = [STAGE_STRIDES[i] for i in self.return_idx]
        if freeze_at >= 0:
            self._freeze(freeze_at)
        if freeze_norm:  # timm's own: it also freezes its BatchNormAct2d (BatchNorm + activation) layers
            self.body = timm.layers.freeze_batch_norm_2d(self.body)

    def _freeze(self, freeze_at: int) -> None:
        """Freeze the body's modules up to (excluding) the one that produces stage ``freeze_at``."""
        children = list(self.body.named_children())
        module_of = {info["reduction"]: info["module"].replace(".", "_") for info in self.body.feature_info.info}
        stop = module_of.get(STAGE_STRIDES[freeze_at]) if freeze_at < len(STAGE_STRIDES) else None
        for name, child in children:
            if name == stop:
                break
            child.requires_grad_(False)

    def adapt_state_dict(self, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """A plain timm model's state dict (``stages.0.blocks.0.conv_dw.weight``), or the original authors' layout
        of the architecture (:data:`FOREIGN_LAYOUTS`), with our names (``body.stages_0.blocks.0.conv_dw.weight``);
        keys already ours, or unknown, stay as they are."""
        family = next((f for f in FOREIGN_LAYOUTS if self.arch.startswith(f)), None)
        if family is not None:
            state = FOREIGN_LAYOUTS[family](state, self)
        own = set(self.state_dict())

        def ours(key: str) -> str:
            for candidate in ("body." + key, "body." + key.replace(".", "_", 1)):
                if candidate in own:
                    return candidate
            return key

        return {ours(key): value for key, value in state.items()}

    def timm_model(self) -> nn.Module:
        """The plain timm model of this architecture (classifier included) on the meta device: its state-dict names
        and shapes, without weights."""
        timm = require("timm", extra="backbones", purpose=f"the {self.arch} backbone")
        with torch.device("meta"):
            return timm.create_model(self.arch, pretrained=False, **self.model_args)

    def forward(self, x: Tensor) -> list[Tensor]:
        """[B, 3, H, W] → one [B, C_i, H / s_i, W / s_i] map per entry of ``return_idx``."""
        return list(self.body(x))


def _facebook_convnext(state: Mapping[str, Tensor], backbone: TimmBackbone) -> dict[str, Tensor]:
    """ConvNeXt in the layout of facebookresearch/ConvNeXt (``downsample_layers.0.0``, ``stages.0.0.dwconv``), which
    TAO's ``convnext_*`` backbones keep (nvidia_tao_pytorch/cv/backbone_v2/convnext_v2.py) → timm's names, through
    timm's own ``checkpoint_filter_fn``, one key at a time so that keys it does not know (TAO's ``conv_512`` output
    projections) pass through unchanged for the loader to report."""
    if not any(k.startswith("downsample_layers.") for k in state):
        return dict(state)
    from timm.models.convnext import checkpoint_filter_fn

    model = backbone.timm_model()
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        try:
            out.update(checkpoint_filter_fn({key: value}, model))
        except KeyError:  # a 2-D tensor timm has no counterpart for
            out[key] = value
    return out


def _mit_efficientvit(state: Mapping[str, Tensor], backbone: TimmBackbone) -> dict[str, Tensor]:
    """EfficientViT in the layout of mit-han-lab/efficientvit (``efficientvit/models/efficientvit/backbone.py``),
    which TAO vendors (nvidia_tao_pytorch/cv/backbone_v2/efficientvit.py) → timm's ``efficientvit_mit`` names.

    B-series: ``input_stem.op_list.0`` → ``stem.in_conv``, ``input_stem.op_list.i`` → ``stem.res{i-1}``,
    ``stages.s.op_list.j`` → ``stages.s.blocks.j``. L-series (no ``input_stem``; MIT's stage 0 is the stem):
    ``stages.0.op_list.0`` → ``stem.in_conv``, ``stages.0.op_list.i`` → ``stem.res{i-1}``, ``stages.s.op_list.j`` →
    ``stages.{s-1}.blocks.j``. Other keys (MIT's classifier ``head.op_list.*``) keep their names.
    """
    if not any(".op_list." in k for k in state):
        return dict(state)
    large = not any(k.startswith("input_stem.") for k in state)

    def rename(key: str) -> str:
        match = re.match(r"^(input_stem|stages\.(\d+))\.op_list\.(\d+)\.", key)
        if match is None:
            return key
        stage = -1 if match[1] == "input_stem" else int(match[2]) - large
        index, rest = int(match[3]), key[match.end() :]
        if stage < 0:
            return f"stem.in_conv.{rest}" if index == 0 else f"stem.res{index - 1}.{rest}"
        return f"stages.{stage}.blocks.{index}.{rest}"

    return {rename(k): v for k, v in state.items()}


FOREIGN_LAYOUTS: dict[str, Callable[[Mapping[str, Tensor], TimmBackbone], dict[str, Tensor]]] = {
    "convnext": _facebook_convnext,
    "efficientvit": _mit_efficientvit,
}
"""Translators of non-timm checkpoint layouts, by the timm architecture name they start with; each returns the state
dict unchanged when it is not in its layout."""
