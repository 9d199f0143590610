"""Hungarian matching of predicted queries to ground-truth boxes, with the focal-style class cost of RT-DETR."""

from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from ..ops.boxes import box_cxcywh_to_xyxy, generalized_box_iou


class HungarianMatcher(nn.Module):
    """One-to-one assignment minimising ``cost_class * focal + cost_bbox * L1 + cost_giou * (-GIoU)``.

    The class cost is the focal-loss difference ``alpha (1-p)^gamma (-log p) - (1-alpha) p^gamma (-log(1-p))`` of
    each query's sigmoid probability ``p`` for the target's class, as in the reference.
    """

    def __init__(
        self, cost_class: float = 2.0, cost_bbox: float = 5.0, cost_giou: float = 2.0, alpha: float = 0.25,
        gamma: float = 2.0,
    ) -> None:  # fmt: skip
        super().__init__()
        self.cost_class, self.cost_bbox, self.cost_giou = cost_class, cost_bbox, cost_giou
        self.alpha, self.gamma = alpha, gamma

    @torch.no_grad()
    def forward(self, outputs: dict[str, Tensor], targets: list[dict[str, Tensor]]) -> list[tuple[Tensor, Tensor]]:
        """outputs ``pred_logits`` [B, Q, C], ``pred_boxes`` [B, Q, 4] cxcywh; targets ``labels`` [n_i],
        ``boxes`` [n_i, 4] → per image (query indices [k_i], target indices [k_i]) int64, k_i = min(Q, n_i)."""
        bs, num_queries = outputs["pred_logits"].shape[:2]
        prob = outputs["pred_logits"].flatten(0, 1).sigmoid()
        boxes = outputs["pred_boxes"].flatten(0, 1)
        tgt_ids = torch.cat([t["labels"] for t in targets])
        tgt_boxes = torch.cat([t["boxes"] for t in targets])
        if len(tgt_ids) == 0:
            empty = torch.zeros(0, dtype=torch.int64)
            return [(empty, empty) for _ in range(bs)]
        p = prob[:, tgt_ids]
        neg = (1 - self.alpha) * p**self.gamma * -(1 - p + 1e-8).log()
        pos = self.alpha * (1 - p) ** self.gamma * -(p + 1e-8).log()
        cost = (
            self.cost_bbox * torch.cdist(boxes, tgt_boxes, p=1)
            + self.cost_class * (pos - neg)
            + self.cost_giou * -generalized_box_iou(box_cxcywh_to_xyxy(boxes), box_cxcywh_to_xyxy(tgt_boxes))
        )
        cost = cost.view(bs, num_queries, -1).cpu()
        sizes = [len(t["boxes"]) for t in targets]
        indices = [linear_sum_assignment(c[i]) for i, c in enumerate(cost.split(sizes, -1))]
        return [(torch.as_tensor(i, dtype=torch.int64), torch.as_tensor(j, dtype=torch.int64)) for i, j in indices]
