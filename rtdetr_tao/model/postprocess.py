"""Torch post-processor: raw outputs → top-k detections in original-image pixels.

Identical in ranking to the numpy :mod:`rtdetr_tao.eval.postprocess` (stretched input): every query/class pair
is ranked by its float32 logit (stable sort, ties by lower flat index ``q * C + c``, NaN last with score 0), the
``num_select`` best are kept, ``boxes`` become ``x1, y1, x2, y2`` scaled by the (w, h) original sizes.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..ops.boxes import box_cxcywh_to_xyxy


class PostProcessor(nn.Module):
    """``(outputs, orig_sizes [B, 2] (w, h)) → [{"labels": [K] int64, "boxes": [K, 4], "scores": [K]}] * B``."""

    def __init__(self, num_select: int = 300) -> None:
        super().__init__()
        self.num_select = num_select

    def extra_repr(self) -> str:
        return f"num_select={self.num_select}"

    def select(self, logits: Tensor, boxes: Tensor, orig_sizes: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """logits [B, Q, C], boxes [B, Q, 4] normalised cxcywh, orig_sizes [B, 2] (w, h) →
        ``(labels [B, K] int64, boxes [B, K, 4] float32 xyxy pixels, scores [B, K] float32)``, best first."""
        num_classes = logits.shape[-1]
        flat = logits.float().flatten(1)
        flat = torch.where(torch.isnan(flat), torch.full_like(flat, -torch.inf), flat)
        if torch.onnx.is_in_onnx_export():  # ONNX has no stable sort; TopK differs only on exact ties
            top, index = torch.topk(flat, min(self.num_select, flat.shape[1]), dim=1)
        else:
            top, index = torch.sort(flat, dim=1, descending=True, stable=True)
            top, index = top[:, : self.num_select], index[:, : self.num_select]
        labels = index % num_classes
        chosen = boxes.float().gather(1, (index // num_classes).unsqueeze(-1).expand(-1, -1, 4))
        pixels = box_cxcywh_to_xyxy(chosen) * orig_sizes.float().repeat(1, 2).unsqueeze(1)
        return labels, pixels, top.sigmoid()

    def forward(self, outputs: dict[str, Tensor], orig_sizes: Tensor) -> list[dict[str, Tensor]]:
        labels, boxes, scores = self.select(outputs["pred_logits"], outputs["pred_boxes"], orig_sizes)
        rows = zip(labels, boxes, scores, strict=True)
        return [{"labels": lab, "boxes": box, "scores": sco} for lab, box, sco in rows]
