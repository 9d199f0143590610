"""Hybrid encoder of RT-DETR: per-level input projection, AIFI (transformer self-attention on the coarsest
level(s)) and CCFM (a top-down FPN and a bottom-up PAN of CSPRep blocks).

State-dict names equal the reference ``HybridEncoder`` (``input_proj.0.conv.weight``,
``encoder.0.layers.0.self_attn.in_proj_weight``, ``fpn_blocks.0.bottlenecks.0.conv1.conv.weight``, ...).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .backbone import ConvNormLayer, activation


def sincos_position_embedding(width: int, height: int, dim: int, temperature: float = 10000.0) -> Tensor:
    """2D sin-cos position embedding → [1, width * height, dim] float32, the reference's exact layout
    (its first coordinate is the outer index of the flattened grid)."""
    if dim % 4:
        raise ValueError(f"the 2D sin-cos position embedding needs a width divisible by 4, got {dim}")
    grid_w, grid_h = torch.meshgrid(
        torch.arange(int(width), dtype=torch.float32), torch.arange(int(height), dtype=torch.float32), indexing="ij"
    )
    omega = 1.0 / temperature ** (torch.arange(dim // 4, dtype=torch.float32) / (dim // 4))
    out_w = grid_w.flatten()[:, None] @ omega[None]
    out_h = grid_h.flatten()[:, None] @ omega[None]
    return torch.cat([out_w.sin(), out_w.cos(), out_h.sin(), out_h.cos()], dim=1)[None]


class TransformerEncoderLayer(nn.Module):
    """Post-norm transformer encoder layer: self-attention (position added to queries and keys) + FFN."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float, act: str) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout, batch_first=True)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.activation = activation(act)

    def forward(self, src: Tensor, pos_embed: Tensor) -> Tensor:
        """src [B, N, C], pos_embed [1, N, C] → [B, N, C]."""
        q = k = src + pos_embed
        attn = self.self_attn(q, k, value=src, need_weights=False)[0]
        src = self.norm1(src + self.dropout1(attn))
        ffn = self.linear2(self.dropout(self.activation(self.linear1(src))))
        return self.norm2(src + self.dropout2(ffn))


class TransformerEncoder(nn.Module):
    """A stack of :class:`TransformerEncoderLayer` (AIFI)."""

    def __init__(self, layers: list[TransformerEncoderLayer]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.activation_checkpoint = False

    def forward(self, src: Tensor, pos_embed: Tensor) -> Tensor:
        """src [B, N, C], pos_embed [1, N, C] → [B, N, C]."""
        for layer in self.layers:
            if self.activation_checkpoint and self.training:
                src = checkpoint(layer, src, pos_embed, use_reentrant=False)
            else:
                src = layer(src, pos_embed)
        return src


class RepVggBlock(nn.Module):
    """3x3 conv-BN + 1x1 conv-BN branches, summed, then the activation; re-parameterisable into one 3x3 conv
    (see :mod:`rtdetr_tao.model.optimize`)."""

    def __init__(self, ch_in: int, ch_out: int, act: str) -> None:
        super().__init__()
        self.conv1 = ConvNormLayer(ch_in, ch_out, 3, 1)
        self.conv2 = ConvNormLayer(ch_in, ch_out, 1, 1)
        self.act = activation(act)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.conv1(x) + self.conv2(x))


class CSPRepLayer(nn.Module):
    """Cross-stage-partial block: ``conv3(bottlenecks(conv1(x)) + conv2(x))``."""

    def __init__(self, ch_in: int, ch_out: int, num_blocks: int, expansion: float, act: str) -> None:
        super().__init__()
        hidden = int(ch_out * expansion)
        self.conv1 = ConvNormLayer(ch_in, hidden, 1, 1, act=act)
        self.conv2 = ConvNormLayer(ch_in, hidden, 1, 1, act=act)
        self.bottlenecks = nn.Sequential(*[RepVggBlock(hidden, hidden, act) for _ in range(num_blocks)])
        self.conv3 = ConvNormLayer(hidden, ch_out, 1, 1, act=act) if hidden != ch_out else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.conv3(self.bottlenecks(self.conv1(x)) + self.conv2(x))


class HybridEncoder(nn.Module):
    """Multi-scale backbone features → fused features of width ``hidden_dim`` at the same strides.

    Args:
        in_channels: channels of each backbone level.
        feat_strides: stride of each level.
        hidden_dim: encoder width (every output level has it).
        use_encoder_idx: levels that go through the AIFI transformer.
        num_encoder_layers: transformer layers per such level.
        expansion, depth_mult: width ratio and depth multiplier (``round(3 * depth_mult)`` RepVGG blocks) of the
            CSPRep blocks.
        eval_spatial_size: (H, W) of the inference input; precomputes the position embeddings for it.
    """

    def __init__(
        self,
        in_channels: list[int],
        feat_strides: list[int],
        hidden_dim: int = 256,
        nhead: int = 8,
        dim_feedforward: int = 1024,
        dropout: float = 0.0,
        enc_act: str = "gelu",
        use_encoder_idx: list[int] = (2,),
        num_encoder_layers: int = 1,
        pe_temperature: float = 10000.0,
        expansion: float = 1.0,
        depth_mult: float = 1.0,
        act: str = "silu",
        eval_spatial_size: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        self.in_channels, self.feat_strides = list(in_channels), list(feat_strides)
        self.hidden_dim, self.pe_temperature = hidden_dim, pe_temperature
        self.use_encoder_idx = list(use_encoder_idx)
        self.eval_spatial_size = tuple(eval_spatial_size) if eval_spatial_size else None
        self.out_channels = [hidden_dim] * len(in_channels)
        self.out_strides = self.feat_strides
        self.input_proj = nn.ModuleList(
            nn.Sequential(OrderedDict(conv=nn.Conv2d(c, hidden_dim, 1, bias=False), norm=nn.BatchNorm2d(hidden_dim)))
            for c in in_channels
        )
        self.encoder = nn.ModuleList(
            TransformerEncoder(
                [
                    TransformerEncoderLayer(hidden_dim, nhead, dim_feedforward, dropout, enc_act)
                    for _ in range(num_encoder_layers)
                ]
            )
            for _ in self.use_encoder_idx
        )
        n_blocks, levels = round(3 * depth_mult), len(in_channels)
        self.lateral_convs = nn.ModuleList(ConvNormLayer(hidden_dim, hidden_dim, 1, 1, act) for _ in range(levels - 1))
        self.fpn_blocks = nn.ModuleList(
            CSPRepLayer(2 * hidden_dim, hidden_dim, n_blocks, expansion, act) for _ in range(levels - 1)
        )
        self.downsample_convs = nn.ModuleList(
            ConvNormLayer(hidden_dim, hidden_dim, 3, 2, act) for _ in range(levels - 1)
        )
        self.pan_blocks = nn.ModuleList(
            CSPRepLayer(2 * hidden_dim, hidden_dim, n_blocks, expansion, act) for _ in range(levels - 1)
        )
        if self.eval_spatial_size:
            eval_h, eval_w = self.eval_spatial_size
            for idx in self.use_encoder_idx:
                stride = self.feat_strides[idx]
                pos = sincos_position_embedding(eval_w // stride, eval_h // stride, hidden_dim, pe_temperature)
                self.register_buffer(f"pos_embed{idx}", pos, persistent=False)

    def position_embedding(self, level: int, height: int, width: int, like: Tensor) -> Tensor:
        """[1, height * width, hidden_dim]: the precomputed one in eval mode at ``eval_spatial_size``."""
        if not self.training and self.eval_spatial_size:
            eval_h, eval_w = self.eval_spatial_size
            stride = self.feat_strides[level]
            if (height, width) == (eval_h // stride, eval_w // stride):
                return getattr(self, f"pos_embed{level}")
        return sincos_position_embedding(width, height, self.hidden_dim, self.pe_temperature).to(like.device)

    def forward(self, feats: list[Tensor]) -> list[Tensor]:
        """One [B, C_i, H_i, W_i] map per level → one [B, hidden_dim, H_i, W_i] map per level."""
        proj = [layer(feat) for layer, feat in zip(self.input_proj, feats, strict=True)]
        for encoder, idx in zip(self.encoder, self.use_encoder_idx, strict=True):
            _, _, h, w = proj[idx].shape
            src = proj[idx].flatten(2).permute(0, 2, 1)
            memory = encoder(src, self.position_embedding(idx, h, w, src))
            proj[idx] = memory.permute(0, 2, 1).reshape(-1, self.hidden_dim, h, w).contiguous()

        levels = len(self.in_channels)
        inner = [proj[-1]]  # top-down: coarse → fine
        for i, idx in enumerate(range(levels - 1, 0, -1)):
            high = self.lateral_convs[i](inner[0])
            inner[0] = high
            up = F.interpolate(high, scale_factor=2.0, mode="nearest")
            inner.insert(0, self.fpn_blocks[i](torch.cat([up, proj[idx - 1]], dim=1)))
        outs = [inner[0]]  # bottom-up: fine → coarse
        for i in range(levels - 1):
            down = self.downsample_convs[i](outs[-1])
            outs.append(self.pan_blocks[i](torch.cat([down, inner[i + 1]], dim=1)))
        return outs
