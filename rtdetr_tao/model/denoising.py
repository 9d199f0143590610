"""Contrastive denoising (DINO-style) query groups for RT-DETR training."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..ops.boxes import box_cxcywh_to_xyxy, box_xyxy_to_cxcywh, inverse_sigmoid


def contrastive_denoising_group(
    targets: list[dict[str, Tensor]],
    num_classes: int,
    num_queries: int,
    class_embed: nn.Embedding,
    num_denoising: int = 100,
    label_noise_ratio: float = 0.5,
    box_noise_scale: float = 1.0,
) -> tuple[Tensor, Tensor, Tensor, dict[str, Any]]:
    """Noised copies of the ground truth as extra decoder queries.

    Each group holds every image's boxes twice (padded to the batch's largest count ``G``): a positive copy with
    noise under half the box size, then a negative copy with noise between one and two halves; groups repeat
    ``num_denoising // G`` times (at least once). A batch without any box gets one dummy group that only
    keeps the computation graph the same on every rank.

    Args:
        targets: per image ``labels`` [n] int64 and ``boxes`` [n, 4] normalised cxcywh.
        class_embed: embedding of ``num_classes + 1`` rows (the last one is padding).

    Returns:
        ``(dn_content [B, N, D], dn_ref_unact [B, N, 4], attn_mask [N + Q, N + Q] bool (True: masked),
        dn_meta)`` with ``N = 2 * G * num_group`` and ``dn_meta = {"dn_positive_idx": tuple of [n_i * num_group]
        int64 (positive query indices per image), "dn_num_group": int, "dn_num_split": [N, num_queries]}``.
    """
    num_gts = [len(t["labels"]) for t in targets]
    device = targets[0]["labels"].device
    max_gt = max(num_gts)
    empty = max_gt == 0
    max_gt = max(max_gt, 1)
    num_group = 1 if empty else max(num_denoising // max_gt, 1)
    bs = len(targets)

    labels = torch.full([bs, max_gt], num_classes, dtype=torch.int32, device=device)
    boxes = torch.zeros([bs, max_gt, 4], device=device)
    if empty:
        boxes[..., :2], boxes[..., 2:] = 0.5, 0.1  # a valid dummy box, never a positive
    pad_mask = torch.zeros([bs, max_gt], dtype=torch.bool, device=device)
    for i, (target, n) in enumerate(zip(targets, num_gts, strict=True)):
        if n:
            labels[i, :n] = target["labels"]
            boxes[i, :n] = target["boxes"]
            pad_mask[i, :n] = True

    labels = labels.tile([1, 2 * num_group])
    boxes = boxes.tile([1, 2 * num_group, 1])
    pad_mask = pad_mask.tile([1, 2 * num_group])
    negative = torch.zeros([bs, 2 * max_gt, 1], device=device)
    negative[:, max_gt:] = 1
    negative = negative.tile([1, num_group, 1])
    positive = (1 - negative).squeeze(-1) * pad_mask
    dn_positive_idx = torch.split(torch.nonzero(positive)[:, 1], [n * num_group for n in num_gts])
    total = 2 * max_gt * num_group

    if label_noise_ratio > 0:
        flip = torch.rand_like(labels, dtype=torch.float) < (label_noise_ratio * 0.5)
        new_labels = torch.randint_like(flip, 0, num_classes, dtype=labels.dtype)
        labels = torch.where(flip & pad_mask, new_labels, labels)

    if box_noise_scale > 0:
        xyxy = box_cxcywh_to_xyxy(boxes)
        diff = torch.tile(boxes[..., 2:] * 0.5, [1, 1, 2]) * box_noise_scale
        sign = torch.randint_like(boxes, 0, 2) * 2.0 - 1.0
        part = torch.rand_like(boxes)
        part = (part + 1.0) * negative + part * (1 - negative)
        xyxy = torch.clip(xyxy + sign * part * diff, min=0.0, max=1.0)
        boxes = box_xyxy_to_cxcywh(xyxy)

    attn_mask = torch.zeros([total + num_queries, total + num_queries], dtype=torch.bool, device=device)
    attn_mask[total:, :total] = True  # matching queries cannot see the denoising ones
    size = 2 * max_gt
    for g in range(num_group):  # a denoising group cannot see the others
        attn_mask[g * size : (g + 1) * size, (g + 1) * size : total] = True
        attn_mask[g * size : (g + 1) * size, : g * size] = True

    dn_meta = {"dn_positive_idx": dn_positive_idx, "dn_num_group": num_group, "dn_num_split": [total, num_queries]}
    return class_embed(labels), inverse_sigmoid(boxes), attn_mask, dn_meta
