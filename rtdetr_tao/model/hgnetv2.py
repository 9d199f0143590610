"""HGNetv2 backbone (PP-HGNetV2) as the official RT-DETRv2 code defines it (``HGNetv2`` with sizes L / X / H).

State-dict names equal the reference's (``stem.stem1.conv.weight``, ``stem.stem2a.conv.1.weight``,
``stages.2.downsample.bn.running_mean``, ``stages.2.blocks.1.layers.0.conv2.conv.weight``,
``stages.0.blocks.0.aggregation_squeeze_conv.conv.weight``, ...), so the official ImageNet stage weights
(``PPHGNetV2_*_ssld_pretrained_from_paddle.pth``) and RT-DETRv2 HGNetv2 checkpoints load unchanged.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .backbone import freeze_batch_norm

StageConfig = tuple[int, int, int, int, bool, bool, int, int]
"""in channels, mid channels, out channels, blocks, downsample, light block, kernel size, layers per block."""

ARCHS: dict[str, tuple[tuple[int, int, int], tuple[StageConfig, ...]]] = {
    "L": (
        (3, 32, 48),
        (
            (48, 48, 128, 1, False, False, 3, 6),
            (128, 96, 512, 1, True, False, 3, 6),
            (512, 192, 1024, 3, True, True, 5, 6),
            (1024, 384, 2048, 1, True, True, 5, 6),
        ),
    ),
    "X": (
        (3, 32, 64),
        (
            (64, 64, 128, 1, False, False, 3, 6),
            (128, 128, 512, 2, True, False, 3, 6),
            (512, 256, 1024, 5, True, True, 5, 6),
            (1024, 512, 2048, 2, True, True, 5, 6),
        ),
    ),
    "H": (
        (3, 48, 96),
        (
            (96, 96, 192, 2, False, False, 3, 6),
            (192, 192, 512, 3, True, False, 3, 6),
            (512, 384, 1024, 6, True, True, 5, 6),
            (1024, 768, 2048, 3, True, True, 5, 6),
        ),
    ),
}
"""(stem channels, stage configs) per size, as in the reference's ``HGNetv2.arch_configs``."""


class LearnableAffineBlock(nn.Module):
    """``scale * x + bias`` with two learned scalars."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor) -> Tensor:
        return self.scale * x + self.bias


class ConvBNAct(nn.Module):
    """conv (no bias) → BatchNorm → optional ReLU (→ optional learnable affine).

    ``pad_right``: pad one pixel right and bottom and convolve unpadded (the reference's ``padding='same'`` for
    its 2x2 stem convs; the conv then sits at ``conv.1``); otherwise symmetric ``(k - 1) // 2`` padding.
    """

    def __init__(
        self,
        ch_in: int,
        ch_out: int,
        kernel_size: int,
        stride: int = 1,
        groups: int = 1,
        act: bool = True,
        use_lab: bool = False,
        pad_right: bool = False,
    ) -> None:
        super().__init__()
        if pad_right:
            self.conv: nn.Module = nn.Sequential(
                nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(ch_in, ch_out, kernel_size, stride, groups=groups, bias=False)
            )
        else:
            padding = (kernel_size - 1) // 2
            self.conv = nn.Conv2d(ch_in, ch_out, kernel_size, stride, padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(ch_out)
        self.use_act, self.use_lab = act, act and use_lab
        if act:
            self.act = nn.ReLU()
        if self.use_lab:
            self.lab = LearnableAffineBlock()

    def forward(self, x: Tensor) -> Tensor:
        x = self.bn(self.conv(x))
        if self.use_act:
            x = self.act(x)
        if self.use_lab:
            x = self.lab(x)
        return x


class LightConvBNAct(nn.Module):
    """1x1 conv (no activation) → depthwise ``kernel_size`` conv with activation."""

    def __init__(self, ch_in: int, ch_out: int, kernel_size: int, use_lab: bool = False) -> None:
        super().__init__()
        self.conv1 = ConvBNAct(ch_in, ch_out, 1, act=False, use_lab=use_lab)
        self.conv2 = ConvBNAct(ch_out, ch_out, kernel_size, groups=ch_out, use_lab=use_lab)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv2(self.conv1(x))


class StemBlock(nn.Module):
    """Stride-4 stem: conv s2 → (2x2 conv pair ‖ 2x2 max pool) → conv s2 → 1x1 conv."""

    def __init__(self, ch_in: int, ch_mid: int, ch_out: int, use_lab: bool = False) -> None:
        super().__init__()
        self.stem1 = ConvBNAct(ch_in, ch_mid, 3, 2, use_lab=use_lab)
        self.stem2a = ConvBNAct(ch_mid, ch_mid // 2, 2, use_lab=use_lab, pad_right=True)
        self.stem2b = ConvBNAct(ch_mid // 2, ch_mid, 2, use_lab=use_lab, pad_right=True)
        self.stem3 = ConvBNAct(ch_mid * 2, ch_mid, 3, 2, use_lab=use_lab)
        self.stem4 = ConvBNAct(ch_mid, ch_out, 1, use_lab=use_lab)
        self.pool = nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.MaxPool2d(2, 1, ceil_mode=True))

    def forward(self, x: Tensor) -> Tensor:
        """[B, 3, H, W] → [B, ch_out, H / 4, W / 4]."""
        x = self.stem1(x)
        x = torch.cat([self.pool(x), self.stem2b(self.stem2a(x))], dim=1)
        return self.stem4(self.stem3(x))


class HGBlock(nn.Module):
    """``layer_num`` chained convs whose outputs (and the input) are concatenated, squeezed to ``ch_out / 2`` and
    excited to ``ch_out`` by 1x1 convs; ``identity`` adds the input."""

    def __init__(
        self,
        ch_in: int,
        ch_mid: int,
        ch_out: int,
        kernel_size: int,
        layer_num: int,
        identity: bool,
        light_block: bool,
        use_lab: bool = False,
    ) -> None:
        super().__init__()
        self.identity = identity
        self.layers = nn.ModuleList()
        for i in range(layer_num):
            c_in = ch_in if i == 0 else ch_mid
            if light_block:
                self.layers.append(LightConvBNAct(c_in, ch_mid, kernel_size, use_lab=use_lab))
            else:
                self.layers.append(ConvBNAct(c_in, ch_mid, kernel_size, use_lab=use_lab))
        total = ch_in + layer_num * ch_mid
        self.aggregation_squeeze_conv = ConvBNAct(total, ch_out // 2, 1, use_lab=use_lab)
        self.aggregation_excitation_conv = ConvBNAct(ch_out // 2, ch_out, 1, use_lab=use_lab)

    def forward(self, x: Tensor) -> Tensor:
        outs = [x]
        for layer in self.layers:
            outs.append(layer(outs[-1]))
        y = self.aggregation_excitation_conv(self.aggregation_squeeze_conv(torch.cat(outs, dim=1)))
        return y + x if self.identity else y


class HGStage(nn.Module):
    """Optional stride-2 depthwise downsample, then ``block_num`` HG blocks (all but the first residual)."""

    def __init__(self, config: StageConfig, use_lab: bool = False) -> None:
        super().__init__()
        ch_in, ch_mid, ch_out, block_num, downsample, light_block, kernel_size, layer_num = config
        self.downsample = (
            ConvBNAct(ch_in, ch_in, 3, 2, groups=ch_in, act=False, use_lab=use_lab) if downsample else None
        )
        self.blocks = nn.Sequential(
            *(
                HGBlock(
                    ch_in if i == 0 else ch_out, ch_mid, ch_out, kernel_size, layer_num, i > 0, light_block, use_lab
                )
                for i in range(block_num)
            )
        )

    def forward(self, x: Tensor) -> Tensor:
        if self.downsample is not None:
            x = self.downsample(x)
        return self.blocks(x)


class HGNetv2(nn.Module):
    """HGNetv2 feature extractor.

    Args:
        name: size, ``L``, ``X`` or ``H``.
        return_idx: stages (0..3, strides 4/8/16/32) whose outputs are returned.
        freeze_at: -1 freezes nothing; ``n >= 0`` freezes the stem and the first ``n`` stages.
        freeze_norm: replace every BatchNorm by a frozen BatchNorm.
        use_lab: learnable affine blocks after activations (off in every RT-DETRv2 config).
    """

    def __init__(
        self,
        name: str,
        return_idx: list[int] = (1, 2, 3),
        freeze_at: int = -1,
        freeze_norm: bool = True,
        use_lab: bool = False,
    ) -> None:
        super().__init__()
        if name not in ARCHS:
            raise ValueError(f"HGNetv2 size {name!r} is not one of {sorted(ARCHS)}")
        stem, stages = ARCHS[name]
        self.stem = StemBlock(*stem, use_lab=use_lab)
        self.stages = nn.ModuleList(HGStage(config, use_lab=use_lab) for config in stages)
        self.return_idx = list(return_idx)
        self.out_channels = [stages[i][2] for i in self.return_idx]
        self.out_strides = [[4, 8, 16, 32][i] for i in self.return_idx]
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight)
        if freeze_at >= 0:
            for module in [self.stem, *self.stages[: min(freeze_at, 4)]]:
                module.requires_grad_(False)
        if freeze_norm:
            freeze_batch_norm(self)

    def forward(self, x: Tensor) -> list[Tensor]:
        """[B, 3, H, W] → one [B, C_i, H / s_i, W / s_i] map per entry of ``return_idx``."""
        x = self.stem(x)
        outs = []
        for idx, stage in enumerate(self.stages):
            x = stage(x)
            if idx in self.return_idx:
                outs.append(x)
        return outs
