"""Backbones built by timm (``features_only``): TAO's ConvNeXt and EfficientViT values and ``timm:<model name>``."""

from __future__ import annotations

from collections.abc import Mapping
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
    ``stages_0``), which :meth:`timm_state_dict` undoes for checkpoints saved from the plain timm model.
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

    def timm_state_dict(self, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Keys of a plain timm model's state dict (``stages.0.blocks.0.conv_dw.weight``) → ours
        (``body.stages_0.blocks.0.conv_dw.weight``); keys already ours, or unknown, stay as they are."""
        own = set(self.state_dict())

        def ours(key: str) -> str:
            for candidate in ("body." + key, "body." + key.replace(".", "_", 1)):
                if candidate in own:
                    return candidate
            return key

        return {ours(key): value for key, value in state.items()}

    def forward(self, x: Tensor) -> list[Tensor]:
        """[B, 3, H, W] → one [B, C_i, H / s_i, W / s_i] map per entry of ``return_idx``."""
        return list(self.body(x))
