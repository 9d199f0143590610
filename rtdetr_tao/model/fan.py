"""FAN (Fully Attentional Network) hybrid backbones, the ``fan_tiny/small/base/large`` values of TAO's RT-DETR.

FAN (Zhou et al., "Understanding The Robustness in Vision Transformers", ICML 2022) is a ViT whose blocks mix tokens
with self-attention and then channels with *attentive channel processing*: a per-channel gate computed from the
tokens' channel statistics scales the output of a convolutional MLP. The hybrid variants replace the ViT patch stem
by the first two ConvNeXt stages (strides 4 and 8) and a 2x2 patch projection (stride 16).

TAO's RT-DETR (``fan_{tiny_8,small_12,base_12,large_12}_p4_hybrid``; NVlabs names base and large ``*_16_p4_hybrid``)
returns four maps to the encoder:

====== ======================================================== =========== =======
stage  module                                                   channels    stride
====== ======================================================== =========== =======
0      ConvNeXt stage 0                                         128         4
1      ConvNeXt stage 1                                         256         8
2      FAN block ``out_index`` (not always the last one)        embed_dim   16
3      all FAN blocks → class-attention blocks → 3x3/2 conv     768         32
====== ======================================================== =========== =======

each through its own LayerNorm (``out_norm{i}``, created for the returned stages only), so ``return_interm_indices``
maps to these stages as for every other family.

State-dict names are TAO's (``patch_embed.backbone.stages.1.blocks.0.conv_dw.weight``, ``blocks.3.mlp.mlp_v.dwconv.bn
.running_mean``, ``cls_attn_blocks.1.norm2.weight``, ``out_norm2.weight``, ``learnable_downsample.weight``, ...), so
TAO's FAN backbone weights and NVlabs' / TAO's ImageNet FAN-hybrid weights load by name. TAO's class-attention blocks
only update the class token, which its RT-DETR discards; what reaches the patch tokens is two LayerNorms and a layer
scale. This module keeps only those: the tensors in :data:`TAO_UNUSED_KEYS` (class token, class-attention q/k/v/proj
and MLP, the classifier's final norm) cannot change any output and are not parameters here, so loading a TAO
checkpoint reports them as not in the model.
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .backbone import freeze_batch_norm


@dataclass(frozen=True)
class FanArch:
    """One FAN-hybrid size: ConvNeXt blocks in its two stages, FAN width / depth / heads, and the FAN block whose
    output is stage 2."""

    convnext_depths: tuple[int, int]
    embed_dim: int
    depth: int
    num_heads: int
    out_index: int


ARCHS: dict[str, FanArch] = {
    "tiny": FanArch((3, 3), 192, 8, 8, 7),
    "small": FanArch((3, 3), 384, 10, 8, 9),
    "base": FanArch((3, 3), 448, 16, 8, 15),
    "large": FanArch((3, 5), 480, 22, 10, 18),
}
"""TAO's RT-DETR FAN sizes (``fan_*_p4_hybrid``)."""

CONVNEXT_DIMS = (128, 256)
"""Channels of the two ConvNeXt stages (strides 4, 8) of every size."""
STAGE3_CHANNELS = 768
"""Channels of stage 3, TAO's ``learnable_downsample`` of the last tokens."""
TAO_UNUSED_KEYS = re.compile(r"^(cls_token|norm\.(weight|bias)|cls_attn_blocks\.\d+\.(attn\..*|mlp\..*|gamma2))$")
"""Tensors of TAO's FAN backbone that no returned feature map depends on (class-token path, classifier norm)."""


def drop_path(x: Tensor, p: float, training: bool) -> Tensor:
    """Stochastic depth: zero whole samples of a residual branch with probability ``p`` (training only) and scale
    the kept ones by ``1 / (1 - p)``. ``x``: [B, ...]."""
    if p == 0.0 or not training:
        return x
    keep = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(1.0 - p)
    return x * keep / (1.0 - p)


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of a [B, C, H, W] map (any memory format).

    ``unbiased``: normalise by the unbiased channel variance (``sum / (C - 1)``), as the reference's ConvNeXt
    ``LayerNorm2d`` does for every input that is not NCHW-contiguous: in TAO's and NVlabs' FAN that is every ConvNeXt
    norm after the stem's (the stem norm's output is a channels-last view, which the convolutions propagate). Computed
    as a biased LayerNorm with weight ``* sqrt((C - 1) / C)`` and eps ``* (C - 1) / C``, which is the same function.
    """

    def __init__(self, dim: int, eps: float = 1e-5, unbiased: bool = False) -> None:
        super().__init__(dim, eps=eps)
        self.shrink = (dim - 1) / dim if unbiased else 1.0

    def forward(self, x: Tensor) -> Tensor:
        """[B, C, H, W] → [B, C, H, W]."""
        weight = self.weight * math.sqrt(self.shrink) if self.shrink != 1.0 else self.weight
        x = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, weight, self.bias, self.eps * self.shrink)
        return x.permute(0, 3, 1, 2)


def tokens_to_map(x: Tensor, h: int, w: int) -> Tensor:
    """[B, H*W, C] tokens → [B, C, H, W] map."""
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], h, w)


# ---------------------------------------------------------------------------------------------- ConvNeXt stem


class ConvNeXtBlock(nn.Module):
    """depthwise 7x7 conv → LayerNorm → 1x1 conv (4x) → GELU → 1x1 conv, scaled by ``gamma``, plus the input."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv_dw = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = LayerNorm2d(dim, eps=1e-6, unbiased=True)
        self.mlp = nn.Sequential(
            OrderedDict(fc1=nn.Conv2d(dim, 4 * dim, 1), act=nn.GELU(), fc2=nn.Conv2d(4 * dim, dim, 1))
        )
        self.gamma = nn.Parameter(torch.full((dim,), 1e-6))

    def forward(self, x: Tensor) -> Tensor:
        """[B, C, H, W] → [B, C, H, W]."""
        return x + self.mlp(self.norm(self.conv_dw(x))) * self.gamma.reshape(1, -1, 1, 1)


class ConvNeXtStage(nn.Module):
    """Optional downsampling (LayerNorm → 2x2 stride-2 conv) and ``depth`` ConvNeXt blocks."""

    def __init__(self, ch_in: int, ch_out: int, depth: int, downsample: bool) -> None:
        super().__init__()
        self.downsample = (
            nn.Sequential(LayerNorm2d(ch_in, eps=1e-6, unbiased=True), nn.Conv2d(ch_in, ch_out, 2, stride=2))
            if downsample
            else nn.Identity()
        )
        self.blocks = nn.Sequential(*(ConvNeXtBlock(ch_out) for _ in range(depth)))

    def forward(self, x: Tensor) -> Tensor:
        """[B, C_in, H, W] → [B, C_out, H / s, W / s] (s = 2 with downsampling, else 1)."""
        return self.blocks(self.downsample(x))


class ConvNeXtStem(nn.Module):
    """4x4 stride-4 patch conv + LayerNorm, then two ConvNeXt stages (the second downsamples)."""

    def __init__(self, depths: tuple[int, int], dims: tuple[int, int] = CONVNEXT_DIMS) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, dims[0], 4, stride=4), LayerNorm2d(dims[0], eps=1e-6))
        self.stages = nn.Sequential(
            ConvNeXtStage(dims[0], dims[0], depths[0], downsample=False),
            ConvNeXtStage(dims[0], dims[1], depths[1], downsample=True),
        )

    def forward(self, x: Tensor) -> list[Tensor]:
        """[B, 3, H, W] → [[B, 128, H/4, W/4], [B, 256, H/8, W/8]]."""
        s4 = self.stages[0](self.stem(x))
        return [s4, self.stages[1](s4)]


class HybridEmbed(nn.Module):
    """ConvNeXt stem, then a 2x2 stride-2 conv turning its stride-8 map into stride-16 tokens."""

    def __init__(self, depths: tuple[int, int], embed_dim: int) -> None:
        super().__init__()
        self.backbone = ConvNeXtStem(depths)
        self.proj = nn.Conv2d(CONVNEXT_DIMS[1], embed_dim, 2, stride=2)

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """[B, 3, H, W] → (tokens map [B, D, H/16, W/16], the two ConvNeXt maps)."""
        maps = self.backbone(x)
        return self.proj(maps[-1]), maps


class PositionalEncodingFourier(nn.Module):
    """Sine / cosine codes of the normalised (row, column) of each token, 32 frequencies each, projected by a 1x1
    conv to the token width. The codes are computed in float32 (as TAO does) and cast to the projection's dtype."""

    def __init__(self, dim: int, hidden_dim: int = 32, temperature: float = 10000.0) -> None:
        super().__init__()
        self.token_projection = nn.Conv2d(2 * hidden_dim, dim, 1)
        self.hidden_dim, self.temperature = hidden_dim, temperature

    def forward(self, h: int, w: int) -> Tensor:
        """Grid size → [1, h*w, dim] position embeddings."""
        device, eps = self.token_projection.weight.device, 1e-6
        y = torch.arange(1, h + 1, dtype=torch.float32, device=device)
        x = torch.arange(1, w + 1, dtype=torch.float32, device=device)
        y = (y / (h + eps) * 2 * math.pi)[:, None].expand(h, w)
        x = (x / (w + eps) * 2 * math.pi)[None, :].expand(h, w)
        j = torch.arange(self.hidden_dim, dtype=torch.float32, device=device)
        freqs = self.temperature ** (2 * torch.div(j, 2, rounding_mode="floor") / self.hidden_dim)

        def code(t: Tensor) -> Tensor:  # [h, w] → [h, w, hidden]: sin on even, cos on odd frequencies, interleaved
            t = t[..., None] / freqs
            return torch.stack([t[..., 0::2].sin(), t[..., 1::2].cos()], dim=-1).flatten(2)

        pos = torch.cat([code(y), code(x)], dim=-1).permute(2, 0, 1)[None]  # [1, 2 * hidden, h, w]
        pos = self.token_projection(pos.to(self.token_projection.weight.dtype))
        return pos.flatten(2).transpose(1, 2)


# ------------------------------------------------------------------------------------------------ FAN blocks


class TokenMixing(nn.Module):
    """Multi-head self-attention over the tokens (q and fused kv projections, output projection)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        """[B, N, C] → [B, N, C]."""
        b, n, c = x.shape
        q = self.q(x).reshape(b, n, self.num_heads, -1).transpose(1, 2)
        k, v = self.kv(x).reshape(b, n, 2, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, c))


class DWConv(nn.Module):
    """depthwise 3x3 conv → GELU → BatchNorm → depthwise 3x3 conv on the token grid."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.act = nn.GELU()
        self.bn = nn.BatchNorm2d(dim)
        self.conv2 = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)

    def forward(self, x: Tensor, h: int, w: int) -> Tensor:
        """[B, h*w, C] → [B, h*w, C]."""
        return self.conv2(self.bn(self.act(self.conv1(tokens_to_map(x, h, w))))).flatten(2).transpose(1, 2)


class ConvMlp(nn.Module):
    """Linear (C → hidden), plus ``gamma`` times a depthwise-conv branch, linear (hidden → C): FAN's MLP for the
    values of channel processing."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = DWConv(hidden)
        self.gamma = nn.Parameter(torch.ones(hidden))
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor, h: int, w: int) -> Tensor:
        """[B, h*w, C] → [B, h*w, C]."""
        x = self.fc1(x)
        return self.fc2(self.gamma * self.dwconv(x, h, w) + x)


class ChannelProcessing(nn.Module):
    """Attentive channel processing (the paper's channel attention): the values are the conv MLP of the tokens
    (then LayerNorm); each head's channel ``i`` is gated by ``temperature * sigmoid(sum_n softmax_n(q)[n, i] *
    mean_j softmax_n(x)[n, j])``, a token-pooled agreement between a projection of the tokens and the tokens."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.mlp_v = ConvMlp(dim, int(dim * mlp_ratio))
        self.norm_v = nn.LayerNorm(dim)
        self.q = nn.Linear(dim, dim)

    def forward(self, x: Tensor, h: int, w: int) -> Tensor:
        """[B, h*w, C] → [B, h*w, C]."""
        b, n, c = x.shape
        q = self.q(x).reshape(b, n, self.num_heads, -1).transpose(1, 2)  # [B, heads, N, C/heads]
        k = x.reshape(b, n, self.num_heads, -1).transpose(1, 2)
        pooled = k.softmax(dim=-2).mean(dim=-1, keepdim=True)  # [B, heads, N, 1]
        gate = torch.sigmoid(q.softmax(dim=-2).transpose(-1, -2) @ pooled) * self.temperature  # [B, heads, C/h, 1]
        v = self.norm_v(self.mlp_v(x, h, w)).reshape(b, n, self.num_heads, -1)
        return (v * gate.permute(0, 3, 1, 2)).reshape(b, n, c)


class FANBlock(nn.Module):
    """``x + γ1 · TokenMixing(LN(x))``, then ``x + γ2 · ChannelProcessing(LN(x))``, each with stochastic depth."""

    def __init__(self, dim: int, num_heads: int, drop_path: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = TokenMixing(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = ChannelProcessing(dim, num_heads)
        self.gamma1 = nn.Parameter(torch.ones(dim))
        self.gamma2 = nn.Parameter(torch.ones(dim))
        self.drop_path = drop_path

    def forward(self, x: Tensor, h: int, w: int) -> Tensor:
        """[B, h*w, C] → [B, h*w, C]."""
        x = x + drop_path(self.gamma1 * self.attn(self.norm1(x)), self.drop_path, self.training)
        return x + drop_path(self.gamma2 * self.mlp(self.norm2(x), h, w), self.drop_path, self.training)


class ClassAttentionTokens(nn.Module):
    """What a class-attention block (TAO's ``ClassAttentionBlock``, ``tokens_norm=True``) does to the patch tokens:
    ``2 · LN2(x + γ1 · LN1(x))``. Its attention and MLP update only the class token, which RT-DETR discards."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.gamma1 = nn.Parameter(torch.ones(dim))
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x: Tensor) -> Tensor:
        """[B, N, C] → [B, N, C]."""
        return 2 * self.norm2(x + self.gamma1 * self.norm1(x))


class FAN(nn.Module):
    """FAN-hybrid feature extractor returning the stages (0..3, strides 4/8/16/32) selected by ``return_idx``.

    Args:
        size: ``tiny``, ``small``, ``base`` or ``large`` (:data:`ARCHS`).
        return_idx: stages whose (LayerNorm-ed) outputs are returned.
        freeze_at: -1 freezes nothing; ``n >= 0`` freezes the ConvNeXt stem conv and stages 0..n-1 (stage 2: the
            patch projection, position embedding and FAN blocks up to ``out_index``; stage 3: the rest).
        freeze_norm: replace the BatchNorms (in the channel MLPs' depthwise convs) by frozen BatchNorms.
        drop_path: stochastic depth of every FAN block (TAO's RT-DETR trains with 0.3).
    """

    def __init__(
        self,
        size: str,
        return_idx: list[int] = (1, 2, 3),
        freeze_at: int = -1,
        freeze_norm: bool = False,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        if size not in ARCHS:
            raise ValueError(f"FAN size {size!r} is not one of {sorted(ARCHS)}")
        arch = ARCHS[size]
        dim = arch.embed_dim
        self.out_index = arch.out_index
        self.patch_embed = HybridEmbed(arch.convnext_depths, dim)
        self.pos_embed = PositionalEncodingFourier(dim)
        self.blocks = nn.ModuleList(FANBlock(dim, arch.num_heads, drop_path) for _ in range(arch.depth))
        self.cls_attn_blocks = nn.ModuleList(ClassAttentionTokens(dim) for _ in range(2))
        self.learnable_downsample = nn.Conv2d(dim, STAGE3_CHANNELS, 3, stride=2, padding=1)
        channels = [*CONVNEXT_DIMS, dim, STAGE3_CHANNELS]
        self.return_idx = list(return_idx)
        for i in self.return_idx:
            self.add_module(f"out_norm{i}", LayerNorm2d(channels[i]))
        self.out_channels = [channels[i] for i in self.return_idx]
        self.out_strides = [[4, 8, 16, 32][i] for i in self.return_idx]
        _init_weights(self)
        if freeze_at >= 0:
            for module in self._stages()[: freeze_at + 1]:
                module.requires_grad_(False)
        if freeze_norm:
            freeze_batch_norm(self)

    def _stages(self) -> list[nn.Module]:
        """The stem and stages 0..3 as modules, in order (see ``freeze_at``)."""
        convnext = self.patch_embed.backbone
        split = self.out_index + 1
        stage2 = nn.ModuleList([self.patch_embed.proj, self.pos_embed, *self.blocks[:split]])
        stage3 = nn.ModuleList([*self.blocks[split:], *self.cls_attn_blocks, self.learnable_downsample])
        return [convnext.stem, *convnext.stages, stage2, stage3]

    def forward(self, x: Tensor) -> list[Tensor]:
        """[B, 3, H, W] → one [B, C_i, H / s_i, W / s_i] map per entry of ``return_idx``."""
        grid, maps = self.patch_embed(x)
        h, w = grid.shape[-2:]
        tokens = grid.flatten(2).transpose(1, 2) + self.pos_embed(h, w)  # [B, h*w, D]
        for idx, block in enumerate(self.blocks):
            tokens = block(tokens, h, w)
            if idx == self.out_index:
                maps.append(tokens_to_map(tokens, h, w))
        for block in self.cls_attn_blocks:
            tokens = block(tokens)
        maps.append(self.learnable_downsample(tokens_to_map(tokens, h, w)))
        return [getattr(self, f"out_norm{i}")(maps[i]) for i in self.return_idx]


def _init_weights(model: FAN) -> None:
    """TAO's initialisation: truncated-normal (std 0.02) linear layers and ConvNeXt convs with zero biases, the
    channel MLPs' depthwise convs normal with std sqrt(2 / fan_out); the other convs keep PyTorch's defaults."""
    for module in model.modules():
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=0.02)
            nn.init.zeros_(module.bias)
        elif isinstance(module, DWConv):
            for conv in (module.conv1, module.conv2):
                nn.init.normal_(conv.weight, 0.0, math.sqrt(2.0 / 9))  # fan_out = 3 * 3 * C / C groups
                nn.init.zeros_(conv.bias)
    for module in model.patch_embed.backbone.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.trunc_normal_(module.weight, std=0.02)
            nn.init.zeros_(module.bias)
