"""PResNet-vd backbone (ResNet-D: deep 3-conv stem, avg-pool shortcuts), as the RT-DETR reference defines it.

State-dict names equal the reference's ``PResNet`` (``conv1.conv1_1.conv.weight``,
``res_layers.0.blocks.0.branch2a.norm.running_mean``, ``res_layers.1.blocks.0.short.conv.conv.weight``, ...), so the
official ImageNet weights and RT-DETRv2 checkpoints load unchanged.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

DEPTHS: dict[int, list[int]] = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 6, 3], 101: [3, 4, 23, 3]}
"""Residual blocks per stage for each supported depth."""


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm2d with fixed statistics and affine parameters, all stored as buffers (``weight``, ``bias``,
    ``running_mean``, ``running_var``), like the reference's; ``num_batches_tracked`` is ignored on load."""

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_features, self.eps = num_features, eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: Tensor) -> Tensor:
        """[B, C, H, W] → [B, C, H, W]."""
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        return x * scale.reshape(1, -1, 1, 1) + shift.reshape(1, -1, 1, 1)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


def freeze_batch_norm(module: nn.Module) -> nn.Module:
    """Replace every ``nn.BatchNorm2d`` in ``module`` (or ``module`` itself) by a :class:`FrozenBatchNorm2d`
    carrying its statistics; returns the (possibly new) module."""
    if type(module) is nn.BatchNorm2d:  # not subclasses, which may add more (timm's BatchNormAct2d: an activation)
        frozen = FrozenBatchNorm2d(module.num_features, module.eps)
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(frozen, name).copy_(getattr(module, name).detach())
        return frozen
    for name, child in module.named_children():
        new = freeze_batch_norm(child)
        if new is not child:
            setattr(module, name, new)
    return module


def activation(name: str | None) -> nn.Module:
    """``relu`` / ``silu`` / ``gelu`` module; None: identity."""
    if name is None:
        return nn.Identity()
    modules = {"relu": lambda: nn.ReLU(inplace=True), "silu": nn.SiLU, "gelu": nn.GELU}
    if name not in modules:
        raise ValueError(f"unknown activation {name!r}; expected one of {sorted(modules)}")
    return modules[name]()


class ConvNormLayer(nn.Sequential):
    """``conv`` (no bias, 'same' padding) → ``norm`` → ``act`` (the reference's ConvNormLayer names)."""

    def __init__(self, ch_in: int, ch_out: int, kernel_size: int, stride: int, act: str | None = None) -> None:
        super().__init__(
            OrderedDict(
                conv=nn.Conv2d(ch_in, ch_out, kernel_size, stride, padding=(kernel_size - 1) // 2, bias=False),
                norm=nn.BatchNorm2d(ch_out),
                act=activation(act),
            )
        )


def _shortcut(ch_in: int, ch_out: int, stride: int) -> nn.Module:
    """Projection shortcut; variant d downsamples with a 2x2 average pool before a stride-1 1x1 conv."""
    if stride == 2:
        return nn.Sequential(
            OrderedDict(pool=nn.AvgPool2d(2, 2, 0, ceil_mode=True), conv=ConvNormLayer(ch_in, ch_out, 1, 1))
        )
    return ConvNormLayer(ch_in, ch_out, 1, stride)


class BasicBlock(nn.Module):
    """Two 3x3 convs + shortcut (ResNet-18/34)."""

    expansion = 1

    def __init__(self, ch_in: int, ch_out: int, stride: int, shortcut: bool) -> None:
        super().__init__()
        self.shortcut = shortcut
        if not shortcut:
            self.short = _shortcut(ch_in, ch_out, stride)
        self.branch2a = ConvNormLayer(ch_in, ch_out, 3, stride, act="relu")
        self.branch2b = ConvNormLayer(ch_out, ch_out, 3, 1)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        out = self.branch2b(self.branch2a(x))
        return self.act(out + (x if self.shortcut else self.short(x)))


class BottleNeck(nn.Module):
    """1x1 → 3x3 (strided) → 1x1 convs + shortcut (ResNet-50/101)."""

    expansion = 4

    def __init__(self, ch_in: int, ch_out: int, stride: int, shortcut: bool) -> None:
        super().__init__()
        self.shortcut = shortcut
        self.branch2a = ConvNormLayer(ch_in, ch_out, 1, 1, act="relu")
        self.branch2b = ConvNormLayer(ch_out, ch_out, 3, stride, act="relu")
        self.branch2c = ConvNormLayer(ch_out, ch_out * self.expansion, 1, 1)
        if not shortcut:
            self.short = _shortcut(ch_in, ch_out * self.expansion, stride)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        out = self.branch2c(self.branch2b(self.branch2a(x)))
        return self.act(out + (x if self.shortcut else self.short(x)))


class Blocks(nn.Module):
    """One ResNet stage; its first block projects (and, except in the first stage, downsamples by 2)."""

    def __init__(self, block: type[BasicBlock | BottleNeck], ch_in: int, ch_out: int, count: int, stage: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList()
        for i in range(count):
            self.blocks.append(block(ch_in, ch_out, stride=2 if i == 0 and stage > 0 else 1, shortcut=i > 0))
            ch_in = ch_out * block.expansion

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x)
        return x


class PResNet(nn.Module):
    """ResNet-vd feature extractor.

    Args:
        depth: 18, 34, 50 or 101.
        return_idx: stages (0..3, strides 4/8/16/32) whose outputs are returned.
        freeze_at: -1 freezes nothing; ``n >= 0`` freezes the stem and the first ``n`` stages.
        freeze_norm: replace every BatchNorm by :class:`FrozenBatchNorm2d`.
    """

    def __init__(
        self, depth: int, return_idx: list[int] = (0, 1, 2, 3), freeze_at: int = -1, freeze_norm: bool = True
    ) -> None:
        super().__init__()
        if depth not in DEPTHS:
            raise ValueError(f"PResNet depth {depth} is not one of {sorted(DEPTHS)}")
        block = BottleNeck if depth >= 50 else BasicBlock
        self.conv1 = nn.Sequential(
            OrderedDict(
                conv1_1=ConvNormLayer(3, 32, 3, 2, act="relu"),
                conv1_2=ConvNormLayer(32, 32, 3, 1, act="relu"),
                conv1_3=ConvNormLayer(32, 64, 3, 1, act="relu"),
            )
        )
        widths = [64, 128, 256, 512]
        channels = [w * block.expansion for w in widths]
        self.res_layers = nn.ModuleList()
        ch_in = 64
        for stage, (width, count) in enumerate(zip(widths, DEPTHS[depth], strict=True)):
            self.res_layers.append(Blocks(block, ch_in, width, count, stage))
            ch_in = channels[stage]
        self.return_idx = list(return_idx)
        self.out_channels = [channels[i] for i in self.return_idx]
        self.out_strides = [[4, 8, 16, 32][i] for i in self.return_idx]
        if freeze_at >= 0:
            for module in [self.conv1, *self.res_layers[:freeze_at]]:
                module.requires_grad_(False)
        if freeze_norm:
            freeze_batch_norm(self)

    @staticmethod
    def adapt_state_dict(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """A ResNet state dict in timm's / torchvision's names (TAO's ``resnet_*`` backbones, TAO classification
        checkpoints, timm's ``resnet*d``) → ours; any other layout is returned unchanged. See :func:`presnet_names`."""
        return presnet_names(state)

    def forward(self, x: Tensor) -> list[Tensor]:
        """[B, 3, H, W] → one [B, C_i, H / s_i, W / s_i] map per entry of ``return_idx``."""
        x = F.max_pool2d(self.conv1(x), kernel_size=3, stride=2, padding=1)
        outs = []
        for idx, stage in enumerate(self.res_layers):
            x = stage(x)
            if idx in self.return_idx:
                outs.append(x)
        return outs


_DEEP_STEM = {"conv1.0.": "conv1.conv1_1.conv.", "conv1.1.": "conv1.conv1_1.norm.", "conv1.3.": "conv1.conv1_2.conv."}
_DEEP_STEM |= {"conv1.4.": "conv1.conv1_2.norm.", "conv1.6.": "conv1.conv1_3.conv.", "bn1.": "conv1.conv1_3.norm."}
_BLOCK = re.compile(r"^layer(\d)\.(\d+)\.(conv|bn)([123])\.")
_DOWNSAMPLE = re.compile(r"^layer(\d)\.(\d+)\.downsample\.(\d)\.")


def presnet_names(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """timm / torchvision ResNet names (``layer2.0.conv1.weight``, ``layer2.0.downsample.1.weight``) → PResNet's
    (``res_layers.1.blocks.0.branch2a.conv.weight``, ``res_layers.1.blocks.0.short.conv.conv.weight``).

    The deep stem of ResNet-D (timm's ``conv1.0/.1/.3/.4/.6`` + ``bn1``) maps onto ``conv1.conv1_1..3``; a plain 7x7
    stem (``conv1.weight``, ``bn1.*``: TAO's RT-DETR ``resnet_*``, torchvision) has no counterpart and keeps its
    names, so the loader reports it. Projection shortcuts map by position: ``downsample.{1,2}`` (ResNet-D: an average
    pool first) or ``downsample.{0,1}`` (a strided 1x1 conv, which the loaded weights then feed through the pool).
    Classifier keys (``fc.*``) keep their names. A state dict without ``layer1.`` keys is returned unchanged.
    """
    if not any(k.startswith("layer1.") for k in state):
        return dict(state)
    deep = any(k.startswith("conv1.0.") for k in state)
    conv_at = 1 if any(_DOWNSAMPLE.match(k) and _DOWNSAMPLE.match(k)[3] == "2" for k in state) else 0
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        name = key
        stem = next((p for p in _DEEP_STEM if key.startswith(p)), None) if deep else None
        block, down = _BLOCK.match(key), _DOWNSAMPLE.match(key)
        if stem is not None:
            name = _DEEP_STEM[stem] + key.removeprefix(stem)
        elif block:
            stage, index, kind, pos = block.groups()
            part = "conv" if kind == "conv" else "norm"
            name = (
                f"res_layers.{int(stage) - 1}.blocks.{index}.branch2{'abc'[int(pos) - 1]}.{part}.{key[block.end() :]}"
            )
        elif down and int(down[3]) - conv_at in (0, 1):
            stage, index = int(down[1]) - 1, down[2]
            part = "conv" if int(down[3]) == conv_at else "norm"
            short = "short.conv" if stage > 0 else "short"  # stride 2: pool + ConvNormLayer; stage 0: ConvNormLayer
            name = f"res_layers.{stage}.blocks.{index}.{short}.{part}.{key[down.end() :]}"
        out[name] = value
    return out
