"""The RT-DETRv2 training objective: varifocal classification loss (or DEIM's matchability-aware loss), L1 and
GIoU box losses on Hungarian-matched queries of the last decoder layer, every auxiliary layer, the encoder proposals
and the denoising groups.

Returned terms are weighted by ``weight_dict`` and named like the reference's: ``loss_vfl`` (or ``loss_mal``),
``loss_bbox``, ``loss_giou``, then ``<name>_aux_<i>``, ``<name>_enc_<i>`` and ``<name>_dn_<i>``, so that
``sum(losses.values())`` is the total loss.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from ..ops.boxes import box_cxcywh_to_xyxy, box_iou, generalized_box_iou
from .matcher import HungarianMatcher

Indices = list[tuple[Tensor, Tensor]]


class SetCriterion(nn.Module):
    """Set-prediction loss of RT-DETRv2 (the reference's ``RTDETRCriterionv2``).

    Args:
        matcher: assigns queries to targets.
        weight_dict: coefficient of each base term (``loss_vfl``, ``loss_mal``, ``loss_bbox``, ``loss_giou``).
        losses: loss families to compute: ``vfl`` or ``mal``, and/or ``boxes``.
        alpha, gamma: varifocal loss parameters.
        num_classes: number of classes (sigmoid logits, no background).
        mal_gamma, mal_alpha: matchability-aware loss parameters (DEIM's ``gamma`` and ``mal_alpha``).
    """

    def __init__(
        self,
        matcher: HungarianMatcher,
        weight_dict: dict[str, float],
        losses: list[str],
        alpha: float = 0.75,
        gamma: float = 2.0,
        num_classes: int = 80,
        mal_gamma: float = 1.5,
        mal_alpha: float | None = None,
    ) -> None:
        super().__init__()
        unknown = set(losses) - {"vfl", "mal", "boxes"}
        if unknown:
            raise ValueError(f"unknown loss types {sorted(unknown)}; use 'vfl' or 'mal', and/or 'boxes'")
        self.matcher, self.weight_dict, self.losses = matcher, dict(weight_dict), list(losses)
        self.alpha, self.gamma, self.num_classes = alpha, gamma, num_classes
        self.mal_gamma, self.mal_alpha = mal_gamma, mal_alpha

    def loss_vfl(
        self, outputs: dict[str, Tensor], targets: list[dict[str, Tensor]], indices: Indices, num_boxes: float,
        num_classes: int,
    ) -> dict[str, Tensor]:  # fmt: skip
        """Varifocal loss: BCE towards IoU-valued targets on matched queries, focal-weighted negatives."""
        logits = outputs["pred_logits"]
        one_hot, target_score = _iou_targets(outputs, targets, indices, num_classes)
        weight = self.alpha * logits.sigmoid().detach().pow(self.gamma) * (1 - one_hot) + target_score
        loss = F.binary_cross_entropy_with_logits(logits, target_score, weight=weight, reduction="none")
        return {"loss_vfl": loss.mean(1).sum() * logits.shape[1] / num_boxes}

    def loss_mal(
        self, outputs: dict[str, Tensor], targets: list[dict[str, Tensor]], indices: Indices, num_boxes: float,
        num_classes: int,
    ) -> dict[str, Tensor]:  # fmt: skip
        """DEIM's matchability-aware loss: BCE towards IoU^gamma on matched queries, weight 1 there;
        negatives weighted by score^gamma (times ``mal_alpha`` when set)."""
        logits = outputs["pred_logits"]
        one_hot, target_score = _iou_targets(outputs, targets, indices, num_classes)
        negative = logits.sigmoid().detach().pow(self.mal_gamma) * (1 - one_hot)
        weight = (negative if self.mal_alpha is None else self.mal_alpha * negative) + one_hot
        target = target_score.pow(self.mal_gamma)
        loss = F.binary_cross_entropy_with_logits(logits, target, weight=weight, reduction="none")
        return {"loss_mal": loss.mean(1).sum() * logits.shape[1] / num_boxes}

    def loss_boxes(
        self, outputs: dict[str, Tensor], targets: list[dict[str, Tensor]], indices: Indices, num_boxes: float
    ) -> dict[str, Tensor]:
        """L1 on normalised cxcywh and 1 - GIoU, summed over matched pairs, divided by ``num_boxes``."""
        batch_idx, query_idx = _permutation(indices)
        boxes = outputs["pred_boxes"][batch_idx, query_idx]
        target = torch.cat([t["boxes"][j] for t, (_, j) in zip(targets, indices, strict=True)])
        giou = torch.diag(generalized_box_iou(box_cxcywh_to_xyxy(boxes), box_cxcywh_to_xyxy(target)))
        return {
            "loss_bbox": F.l1_loss(boxes, target, reduction="none").sum() / num_boxes,
            "loss_giou": (1 - giou).sum() / num_boxes,
        }

    def _terms(
        self, outputs: dict[str, Tensor], targets: list[dict[str, Tensor]], indices: Indices, num_boxes: float,
        suffix: str = "", num_classes: int | None = None,
    ) -> dict[str, Tensor]:  # fmt: skip
        terms: dict[str, Tensor] = {}
        for loss in self.losses:
            if loss == "vfl":
                terms |= self.loss_vfl(outputs, targets, indices, num_boxes, num_classes or self.num_classes)
            elif loss == "mal":
                terms |= self.loss_mal(outputs, targets, indices, num_boxes, num_classes or self.num_classes)
            else:
                terms |= self.loss_boxes(outputs, targets, indices, num_boxes)
        return {k + suffix: v * self.weight_dict[k] for k, v in terms.items() if k in self.weight_dict}

    def forward(self, outputs: dict[str, Any], targets: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        """``outputs`` of :class:`RTDETR` (see its module docstring), ``targets`` with ``labels`` [n_i] and
        ``boxes`` [n_i, 4] normalised cxcywh → weighted loss terms (scalars)."""
        num_boxes = self._num_boxes(targets, outputs["pred_logits"].device)
        main = {"pred_logits": outputs["pred_logits"], "pred_boxes": outputs["pred_boxes"]}
        losses = self._terms(main, targets, self.matcher(main, targets), num_boxes)
        for i, aux in enumerate(outputs.get("aux_outputs", [])):
            losses |= self._terms(aux, targets, self.matcher(aux, targets), num_boxes, f"_aux_{i}")
        if "dn_aux_outputs" in outputs:
            meta = outputs["dn_meta"]
            indices = _denoising_indices(meta, targets)
            dn_boxes = num_boxes * meta["dn_num_group"]
            for i, aux in enumerate(outputs["dn_aux_outputs"]):
                losses |= self._terms(aux, targets, indices, dn_boxes, f"_dn_{i}")
        if "enc_aux_outputs" in outputs:
            agnostic = outputs.get("enc_meta", {}).get("class_agnostic", False)
            enc_targets = [{**t, "labels": torch.zeros_like(t["labels"])} for t in targets] if agnostic else targets
            num_classes = 1 if agnostic else None
            for i, aux in enumerate(outputs["enc_aux_outputs"]):
                indices = self.matcher(aux, enc_targets)
                losses |= self._terms(aux, enc_targets, indices, num_boxes, f"_enc_{i}", num_classes)
        return losses

    @staticmethod
    def _num_boxes(targets: list[dict[str, Tensor]], device: torch.device) -> float:
        """Target boxes per rank, averaged over all ranks, at least 1."""
        count = torch.tensor([float(sum(len(t["labels"]) for t in targets))], device=device)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(count)
            count /= dist.get_world_size()
        return count.clamp(min=1).item()


def _iou_targets(
    outputs: dict[str, Tensor], targets: list[dict[str, Tensor]], indices: Indices, num_classes: int
) -> tuple[Tensor, Tensor]:
    """(one-hot class targets [B, Q, C], IoU of each matched query with its box at its class [B, Q, C])."""
    logits = outputs["pred_logits"]
    batch_idx, query_idx = _permutation(indices)
    matched = outputs["pred_boxes"][batch_idx, query_idx]
    target_boxes = torch.cat([t["boxes"][j] for t, (_, j) in zip(targets, indices, strict=True)])
    ious = torch.diag(box_iou(box_cxcywh_to_xyxy(matched), box_cxcywh_to_xyxy(target_boxes))[0]).detach()
    classes = torch.full(logits.shape[:2], num_classes, dtype=torch.int64, device=logits.device)
    classes[batch_idx, query_idx] = torch.cat([t["labels"][j] for t, (_, j) in zip(targets, indices, strict=True)])
    one_hot = F.one_hot(classes, num_classes + 1)[..., :-1]
    score = torch.zeros(logits.shape[:2], dtype=logits.dtype, device=logits.device)
    score[batch_idx, query_idx] = ious.to(logits.dtype)
    return one_hot, score.unsqueeze(-1) * one_hot


def _permutation(indices: Indices) -> tuple[Tensor, Tensor]:
    """(batch index, query index) of every matched query, image after image."""
    batch = torch.cat([torch.full_like(src, i) for i, (src, _) in enumerate(indices)])
    return batch, torch.cat([src for src, _ in indices])


def _denoising_indices(meta: dict[str, Any], targets: list[dict[str, Tensor]]) -> Indices:
    """Denoising queries are matched by construction: the positive query of group g for box j is paired with j."""
    groups = meta["dn_num_group"]
    indices = []
    for positive, target in zip(meta["dn_positive_idx"], targets, strict=True):
        n = len(target["labels"])
        gt = torch.arange(n, dtype=torch.int64, device=positive.device).repeat(groups)
        if len(positive) != len(gt):
            raise ValueError(f"denoising meta has {len(positive)} positive queries for {n} boxes x {groups} groups")
        indices.append((positive, gt))
    return indices


def to_float(value: Any) -> Any:
    """Every floating tensor in nested dicts / lists / tuples as float32 (losses are computed in fp32)."""
    if torch.is_tensor(value):
        return value.float() if value.is_floating_point() else value
    if isinstance(value, dict):
        return {k: to_float(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(to_float(v) for v in value)
    return value
