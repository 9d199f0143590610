"""RT-DETRv2 transformer decoder: query selection from the encoder memory, multi-scale deformable cross-attention
with per-level sampling points, iterative box refinement and contrastive denoising in training.

State-dict names equal the reference ``RTDETRTransformerv2`` (``input_proj.0.conv.weight``,
``decoder.layers.0.cross_attn.sampling_offsets.weight``, ``dec_score_head.0.weight``, ``enc_bbox_head.layers.2.bias``,
...). ``anchors`` and ``valid_mask`` are derived from ``eval_spatial_size`` and kept out of the state dict; the
copies in official checkpoints are ignored on load.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn import init
from torch.utils.checkpoint import checkpoint

from ..ops.boxes import inverse_sigmoid
from .backbone import activation
from .denoising import contrastive_denoising_group


class MLP(nn.Module):
    """``num_layers`` linear layers with ReLU in between."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1)
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims, [*dims[1:], output_dim], strict=True))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers[:-1]:
            x = self.act(layer(x))
        return self.layers[-1](x)


def deformable_sampling(
    value: Tensor,
    spatial_shapes: list[tuple[int, int]],
    locations: Tensor,
    weights: Tensor,
    num_points: list[int],
    method: str = "default",
) -> Tensor:
    """Attention-weighted sum of values sampled at ``locations``.

    Args:
        value: [B, N, heads, c], the levels' [h, w] maps flattened and concatenated.
        spatial_shapes: (h, w) of each level.
        locations: [B, Q, heads, P, 2] normalised (x, y), the levels' points concatenated (P = sum(num_points)).
        weights: [B, Q, heads, P] attention weights.
        method: ``default``: bilinear ``grid_sample`` (zero padding, align_corners False); ``discrete``: the value at
            integer index ``trunc(location * (w, h) + 0.5)`` clamped into the map (the reference's rounding, which
            puts pixel ``i`` at normalised position ``i / w``); no gradient reaches ``locations``.

    Returns:
        [B, Q, heads * c].
    """
    bs, _, heads, c = value.shape
    num_queries = locations.shape[1]
    values = value.permute(0, 2, 3, 1).flatten(0, 1).split([h * w for h, w in spatial_shapes], dim=-1)
    grids = (2 * locations - 1 if method == "default" else locations).permute(0, 2, 1, 3, 4).flatten(0, 1)
    grids = grids.split(num_points, dim=-2)  # per level: [B * heads, Q, P_l, 2]
    sampled = []
    for (h, w), value_l, grid, points in zip(spatial_shapes, values, grids, num_points, strict=True):
        if method == "default":
            sampled.append(F.grid_sample(value_l.reshape(bs * heads, c, h, w), grid, align_corners=False))
        else:
            coord = (grid.detach() * torch.tensor([w, h], device=grid.device) + 0.5).to(torch.int64)
            index = coord[..., 1].clamp(0, h - 1) * w + coord[..., 0].clamp(0, w - 1)  # [B * heads, Q, P_l]
            index = index.reshape(bs * heads, 1, num_queries * points).expand(-1, c, -1)
            sampled.append(value_l.gather(2, index).reshape(bs * heads, c, num_queries, points))
    weights = weights.permute(0, 2, 1, 3).reshape(bs * heads, 1, num_queries, sum(num_points))
    out = (torch.cat(sampled, dim=-1) * weights).sum(-1).reshape(bs, heads * c, num_queries)
    return out.permute(0, 2, 1)


class MSDeformableAttention(nn.Module):
    """Multi-scale deformable attention around reference boxes, ``num_points[l]`` points per head at level ``l``.

    Offsets are scaled by the box size / the level's point count (RT-DETRv2), so a point lands at
    ``box_center + offset / n_points * box_wh * offset_scale``. With ``method="discrete"`` the offset projection is
    frozen (``requires_grad=False``): rounding gives it no gradient, and DDP must not wait for one.
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        num_points: list[int],
        method: str = "default",
        offset_scale: float = 0.5,
    ) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} must be divisible by num_heads {num_heads}")
        if method not in ("default", "discrete"):
            raise ValueError(f"cross_attn_method must be 'default' or 'discrete', got {method!r}")
        self.embed_dim, self.num_heads, self.head_dim = embed_dim, num_heads, embed_dim // num_heads
        self.num_points_list, self.method, self.offset_scale = list(num_points), method, offset_scale
        total = num_heads * sum(self.num_points_list)
        scale = [1 / n for n in self.num_points_list for _ in range(n)]
        self.register_buffer("num_points_scale", torch.tensor(scale, dtype=torch.float32))
        self.sampling_offsets = nn.Linear(embed_dim, total * 2)
        self.attention_weights = nn.Linear(embed_dim, total)
        self.value_proj = nn.Linear(embed_dim, embed_dim)
        self.output_proj = nn.Linear(embed_dim, embed_dim)
        self._reset_parameters()
        if method == "discrete":
            self.sampling_offsets.requires_grad_(False)

    def _reset_parameters(self) -> None:
        init.constant_(self.sampling_offsets.weight, 0)
        thetas = torch.arange(self.num_heads, dtype=torch.float32) * (2.0 * math.pi / self.num_heads)
        grid = torch.stack([thetas.cos(), thetas.sin()], -1)
        grid = grid / grid.abs().max(-1, keepdim=True).values
        grid = grid.reshape(self.num_heads, 1, 2).tile([1, sum(self.num_points_list), 1])
        grid = grid * torch.cat([torch.arange(1, n + 1) for n in self.num_points_list]).reshape(1, -1, 1)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.flatten())
        init.constant_(self.attention_weights.weight, 0)
        init.constant_(self.attention_weights.bias, 0)
        for proj in (self.value_proj, self.output_proj):
            init.xavier_uniform_(proj.weight)
            init.constant_(proj.bias, 0)

    def forward(
        self, query: Tensor, reference_boxes: Tensor, value: Tensor, spatial_shapes: list[tuple[int, int]]
    ) -> Tensor:
        """query [B, Q, C], reference_boxes [B, Q, 1, 4] normalised cxcywh, value [B, N, C] → [B, Q, C]."""
        bs, num_queries = query.shape[:2]
        points = sum(self.num_points_list)
        value = self.value_proj(value).reshape(bs, value.shape[1], self.num_heads, self.head_dim)
        offsets = self.sampling_offsets(query).reshape(bs, num_queries, self.num_heads, points, 2)
        weights = self.attention_weights(query).reshape(bs, num_queries, self.num_heads, points).softmax(-1)
        scale = self.num_points_scale.to(query.dtype).unsqueeze(-1)
        offsets = offsets * scale * reference_boxes[:, :, None, :, 2:] * self.offset_scale
        locations = reference_boxes[:, :, None, :, :2] + offsets
        out = deformable_sampling(value, spatial_shapes, locations, weights, self.num_points_list, self.method)
        return self.output_proj(out)


class TransformerDecoderLayer(nn.Module):
    """Post-norm decoder layer: query self-attention, deformable cross-attention, FFN."""

    def __init__(
        self,
        d_model: int,
        n_head: int,
        dim_feedforward: int,
        dropout: float,
        act: str,
        num_points: list[int],
        cross_attn_method: str,
    ) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, n_head, dropout=dropout, batch_first=True)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.cross_attn = MSDeformableAttention(d_model, n_head, num_points, method=cross_attn_method)
        self.dropout2 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.activation = activation(act)
        self.dropout3 = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.dropout4 = nn.Dropout(dropout)
        self.norm3 = nn.LayerNorm(d_model)
        init.xavier_uniform_(self.linear1.weight)
        init.xavier_uniform_(self.linear2.weight)

    def forward(
        self,
        target: Tensor,
        reference_boxes: Tensor,
        memory: Tensor,
        spatial_shapes: list[tuple[int, int]],
        attn_mask: Tensor | None,
        query_pos: Tensor,
    ) -> Tensor:
        """target [B, Q, C], reference_boxes [B, Q, 1, 4], memory [B, N, C], query_pos [B, Q, C] → [B, Q, C]."""
        q = k = target + query_pos
        attn = self.self_attn(q, k, value=target, attn_mask=attn_mask, need_weights=False)[0]
        target = self.norm1(target + self.dropout1(attn))
        cross = self.cross_attn(target + query_pos, reference_boxes, memory, spatial_shapes)
        target = self.norm2(target + self.dropout2(cross))
        ffn = self.linear2(self.dropout3(self.activation(self.linear1(target))))
        return self.norm3(target + self.dropout4(ffn))


class TransformerDecoder(nn.Module):
    """Decoder layers with iterative box refinement; the heads belong to the caller."""

    def __init__(self, layers: list[TransformerDecoderLayer], eval_idx: int = -1) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.num_layers = len(layers)
        self.eval_idx = eval_idx if eval_idx >= 0 else self.num_layers + eval_idx
        self.activation_checkpoint = False

    def forward(
        self,
        target: Tensor,
        ref_unact: Tensor,
        memory: Tensor,
        spatial_shapes: list[tuple[int, int]],
        bbox_head: nn.ModuleList,
        score_head: nn.ModuleList,
        query_pos_head: MLP,
        attn_mask: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """→ ``(boxes [L, B, Q, 4], logits [L, B, Q, C])``: every layer in training, only ``eval_idx`` in eval.

        In training, layer ``i > 0`` boxes are refined from the previous layer's boxes with gradient (the next
        layer's input boxes are detached), as the reference does.
        """
        boxes_out, logits_out = [], []
        ref_detached = ref_unact.sigmoid()
        ref = ref_detached
        output = target
        for i, layer in enumerate(self.layers):
            query_pos = query_pos_head(ref_detached)
            args = (output, ref_detached.unsqueeze(2), memory, spatial_shapes, attn_mask, query_pos)
            if self.activation_checkpoint and self.training:
                output = checkpoint(layer, *args, use_reentrant=False)
            else:
                output = layer(*args)
            delta = bbox_head[i](output)
            inter_ref = (delta + inverse_sigmoid(ref_detached)).sigmoid()
            if self.training:
                logits_out.append(score_head[i](output))
                boxes_out.append(inter_ref if i == 0 else (delta + inverse_sigmoid(ref)).sigmoid())
            elif i == self.eval_idx:
                logits_out.append(score_head[i](output))
                boxes_out.append(inter_ref)
                break
            ref = inter_ref
            ref_detached = inter_ref.detach()
        return torch.stack(boxes_out), torch.stack(logits_out)


class RTDETRTransformerv2(nn.Module):
    """Encoder features → detections (see :class:`rtdetr_tao.model.rtdetr.RTDETR` for the output dict).

    Args:
        feat_channels, feat_strides: the encoder's output levels; ``num_levels`` beyond them are added by stride-2
            3x3 convolutions on the last level.
        num_points: sampling points per head, one number for every level or one per level.
        num_denoising: denoising queries in training (0 disables denoising).
        eval_spatial_size: (H, W) of the inference input; precomputes the anchors for it.
        eval_idx: decoder layer whose output is used in eval mode (-1: the last).
        cross_attn_method: ``default`` (grid_sample) or ``discrete``.
        query_select_method: ``default`` (top-k by best class score) or ``agnostic`` (one class-agnostic score).
    """

    def __init__(
        self,
        num_classes: int = 80,
        hidden_dim: int = 256,
        num_queries: int = 300,
        feat_channels: list[int] = (256, 256, 256),
        feat_strides: list[int] = (8, 16, 32),
        num_levels: int = 3,
        num_points: int | list[int] = 4,
        nhead: int = 8,
        num_layers: int = 6,
        dim_feedforward: int = 1024,
        dropout: float = 0.0,
        activation: str = "relu",
        num_denoising: int = 100,
        label_noise_ratio: float = 0.5,
        box_noise_scale: float = 1.0,
        eval_spatial_size: tuple[int, int] | None = None,
        eval_idx: int = -1,
        eps: float = 1e-2,
        aux_loss: bool = True,
        cross_attn_method: str = "default",
        query_select_method: str = "default",
    ) -> None:
        super().__init__()
        if len(feat_channels) > num_levels or len(feat_strides) != len(feat_channels):
            raise ValueError(f"{len(feat_channels)} feature levels do not fit num_levels={num_levels}")
        if query_select_method not in ("default", "agnostic"):
            raise ValueError(f"query_select_method must be 'default' or 'agnostic', got {query_select_method!r}")
        points = [num_points] * num_levels if isinstance(num_points, int) else list(num_points)
        if len(points) != num_levels:
            raise ValueError(f"num_points {num_points} needs one entry per level ({num_levels})")
        strides = list(feat_strides)
        strides += [strides[-1] * 2 ** (i + 1) for i in range(num_levels - len(strides))]
        self.hidden_dim, self.nhead, self.feat_strides, self.num_levels = hidden_dim, nhead, strides, num_levels
        self.num_classes, self.num_queries, self.eps, self.num_layers = num_classes, num_queries, eps, num_layers
        self.eval_spatial_size = tuple(eval_spatial_size) if eval_spatial_size else None
        self.aux_loss, self.query_select_method = aux_loss, query_select_method
        self.num_denoising, self.label_noise_ratio, self.box_noise_scale = (
            num_denoising,
            label_noise_ratio,
            box_noise_scale,
        )

        self.input_proj = nn.ModuleList(_conv_norm(c, hidden_dim, 1, 1) for c in feat_channels)
        in_channels = feat_channels[-1]
        for _ in range(num_levels - len(feat_channels)):
            self.input_proj.append(_conv_norm(in_channels, hidden_dim, 3, 2))
            in_channels = hidden_dim

        self.decoder = TransformerDecoder(
            [
                TransformerDecoderLayer(
                    hidden_dim, nhead, dim_feedforward, dropout, activation, points, cross_attn_method
                )
                for _ in range(num_layers)
            ],
            eval_idx,
        )
        if num_denoising > 0:
            self.denoising_class_embed = nn.Embedding(num_classes + 1, hidden_dim, padding_idx=num_classes)
            init.normal_(self.denoising_class_embed.weight[:-1])
        self.query_pos_head = MLP(4, 2 * hidden_dim, hidden_dim, 2)
        self.enc_output = nn.Sequential(
            OrderedDict(proj=nn.Linear(hidden_dim, hidden_dim), norm=nn.LayerNorm(hidden_dim))
        )
        self.enc_score_head = nn.Linear(hidden_dim, 1 if query_select_method == "agnostic" else num_classes)
        self.enc_bbox_head = MLP(hidden_dim, hidden_dim, 4, 3)
        self.dec_score_head = nn.ModuleList(nn.Linear(hidden_dim, num_classes) for _ in range(num_layers))
        self.dec_bbox_head = nn.ModuleList(MLP(hidden_dim, hidden_dim, 4, 3) for _ in range(num_layers))

        if self.eval_spatial_size:
            eval_h, eval_w = self.eval_spatial_size
            self._eval_shapes = [(int(eval_h / s), int(eval_w / s)) for s in self.feat_strides]
            anchors, valid_mask = self.generate_anchors(self._eval_shapes)
            self.register_buffer("anchors", anchors, persistent=False)
            self.register_buffer("valid_mask", valid_mask, persistent=False)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        prior_bias = -math.log((1 - 0.01) / 0.01)
        init.constant_(self.enc_score_head.bias, prior_bias)
        for head in [self.enc_bbox_head, *self.dec_bbox_head]:
            init.constant_(head.layers[-1].weight, 0)
            init.constant_(head.layers[-1].bias, 0)
        for head in self.dec_score_head:
            init.constant_(head.bias, prior_bias)
        init.xavier_uniform_(self.enc_output.proj.weight)
        for layer in self.query_pos_head.layers:
            init.xavier_uniform_(layer.weight)
        for proj in self.input_proj:
            init.xavier_uniform_(proj.conv.weight)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        for name in ("anchors", "valid_mask"):  # derived buffers that official checkpoints carry
            state_dict.pop(prefix + name, None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def generate_anchors(
        self, spatial_shapes: list[tuple[int, int]], grid_size: float = 0.05, device: torch.device | None = None
    ) -> tuple[Tensor, Tensor]:
        """→ ``(anchors [1, N, 4] float32 logits of cxcywh, inf where invalid; valid_mask [1, N, 1] bool)``."""
        anchors = []
        for lvl, (h, w) in enumerate(spatial_shapes):
            grid_y, grid_x = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
            grid_xy = (torch.stack([grid_x, grid_y], dim=-1).unsqueeze(0) + 0.5) / torch.tensor(
                [w, h], dtype=torch.float32
            )
            wh = torch.ones_like(grid_xy) * grid_size * (2.0**lvl)
            anchors.append(torch.cat([grid_xy, wh], dim=-1).reshape(-1, h * w, 4))
        anchors = torch.cat(anchors, dim=1).to(device)
        valid_mask = ((anchors > self.eps) * (anchors < 1 - self.eps)).all(-1, keepdim=True)
        anchors = torch.log(anchors / (1 - anchors))
        return torch.where(valid_mask, anchors, torch.inf), valid_mask

    def _flatten_levels(self, feats: list[Tensor]) -> tuple[Tensor, list[tuple[int, int]]]:
        """Encoder levels → (memory [B, N, hidden_dim], (h, w) per level), extra levels included."""
        proj = [layer(feat) for layer, feat in zip(self.input_proj, feats, strict=False)]
        for i in range(len(feats), self.num_levels):
            proj.append(self.input_proj[i](feats[-1] if i == len(feats) else proj[-1]))
        shapes = [(f.shape[2], f.shape[3]) for f in proj]
        return torch.cat([f.flatten(2).permute(0, 2, 1) for f in proj], dim=1), shapes

    def _select_queries(self, memory: Tensor, spatial_shapes: list[tuple[int, int]]) -> tuple[Tensor, ...]:
        """Top-``num_queries`` encoder proposals → (content [B, Q, D], box logits [B, Q, 4], class logits
        [B, Q, C or 1]); the first two are detached."""
        if not self.training and self.eval_spatial_size and spatial_shapes == self._eval_shapes:
            anchors, valid_mask = self.anchors, self.valid_mask
        else:
            anchors, valid_mask = self.generate_anchors(spatial_shapes, device=memory.device)
        output_memory = self.enc_output(valid_mask.to(memory.dtype) * memory)
        logits = self.enc_score_head(output_memory)
        scores = logits.squeeze(-1) if self.query_select_method == "agnostic" else logits.max(-1).values
        if scores.shape[1] < self.num_queries:
            raise ValueError(
                f"the input gives {scores.shape[1]} encoder tokens (feature maps {spatial_shapes}), fewer than "
                f"num_queries={self.num_queries}; use larger images or fewer queries"
            )
        index = torch.topk(scores, self.num_queries, dim=-1)[1].unsqueeze(-1)
        topk_memory = output_memory.gather(1, index.expand(-1, -1, output_memory.shape[-1]))
        topk_logits = logits.gather(1, index.expand(-1, -1, logits.shape[-1]))
        # the box head runs on the Q selected tokens only: the reference's result, without H*W - Q wasted rows
        topk_anchors = anchors.expand(memory.shape[0], -1, -1).gather(1, index.expand(-1, -1, 4))
        topk_coords = self.enc_bbox_head(topk_memory) + topk_anchors
        return topk_memory.detach(), topk_coords, topk_logits

    def forward(self, feats: list[Tensor], targets: list[dict[str, Tensor]] | None = None) -> dict[str, Any]:
        """Encoder levels [B, C, H_i, W_i] → output dict (denoising when training with ``targets``)."""
        memory, spatial_shapes = self._flatten_levels(feats)
        dn_meta = attn_mask = None
        if self.training and self.num_denoising > 0 and targets is not None:
            dn_content, dn_ref, attn_mask, dn_meta = contrastive_denoising_group(
                targets,
                self.num_classes,
                self.num_queries,
                self.denoising_class_embed,
                self.num_denoising,
                self.label_noise_ratio,
                self.box_noise_scale,
            )
        content, ref_unact, enc_logits = self._select_queries(memory, spatial_shapes)
        enc_boxes = ref_unact.sigmoid()
        ref_unact = ref_unact.detach()
        if dn_meta is not None:
            content = torch.cat([dn_content, content], dim=1)
            ref_unact = torch.cat([dn_ref, ref_unact], dim=1)

        boxes, logits = self.decoder(
            content,
            ref_unact,
            memory,
            spatial_shapes,
            self.dec_bbox_head,
            self.dec_score_head,
            self.query_pos_head,
            attn_mask=attn_mask,
        )
        if dn_meta is not None:
            dn_boxes, boxes = torch.split(boxes, dn_meta["dn_num_split"], dim=2)
            dn_logits, logits = torch.split(logits, dn_meta["dn_num_split"], dim=2)
        out: dict[str, Any] = {"pred_logits": logits[-1], "pred_boxes": boxes[-1]}
        if self.training and self.aux_loss:
            out["aux_outputs"] = _as_dicts(logits[:-1], boxes[:-1])
            out["enc_aux_outputs"] = _as_dicts([enc_logits], [enc_boxes])
            out["enc_meta"] = {"class_agnostic": self.query_select_method == "agnostic"}
            if dn_meta is not None:
                out["dn_aux_outputs"] = _as_dicts(dn_logits, dn_boxes)
                out["dn_meta"] = dn_meta
        return out


def _conv_norm(ch_in: int, ch_out: int, kernel_size: int, stride: int) -> nn.Sequential:
    """``conv`` (no bias) → ``norm``, the decoder's input projection."""
    conv = nn.Conv2d(ch_in, ch_out, kernel_size, stride, padding=(kernel_size - 1) // 2, bias=False)
    return nn.Sequential(OrderedDict(conv=conv, norm=nn.BatchNorm2d(ch_out)))


def _as_dicts(logits: list[Tensor] | Tensor, boxes: list[Tensor] | Tensor) -> list[dict[str, Tensor]]:
    return [{"pred_logits": lg, "pred_boxes": bx} for lg, bx in zip(logits, boxes, strict=True)]
