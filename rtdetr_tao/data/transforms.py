"""The paper's training augmentation (torchvision.transforms.v2), its dynamic switch-off, and the batch-level
multi-scale resize.

Training, per image: RandomPhotometricDistort → RandomZoomOut → RandomIoUCrop → SanitizeBoundingBoxes →
RandomHorizontalFlip → Resize(train_spatial_size) → SanitizeBoundingBoxes. From ``stop_epoch`` on, the three
strong operations (distortion, zoom-out, IoU crop) are off, and so is the multi-scale resize (RT-DETRv2's dynamic
data augmentation). Evaluation uses :func:`rtdetr_tao.data.preprocess.to_model_input`, which ``rtdetr-deploy``
shares.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import v2

from ..config.dataset import AugmentationSpec


class TrainTransform:
    """``(PIL image, boxes [n, 4] xyxy pixels, labels [n]) → (image float [3, H, W] in [0, 1], boxes [m, 4]
    normalised cxcywh, labels [m])`` with the augmentation of ``aug``; ``strong=False`` after ``stop_epoch``."""

    def __init__(self, aug: AugmentationSpec) -> None:
        height, width = aug.train_spatial_size
        self.photometric = v2.RandomPhotometricDistort(p=aug.distortion_prob)
        self.zoom_out = v2.RandomZoomOut(fill=0, side_range=(1.0, aug.zoom_out_max_scale), p=aug.zoom_out_prob)
        self.iou_crop = v2.RandomIoUCrop()
        self.iou_crop_prob = aug.iou_crop_prob
        self.sanitize = v2.SanitizeBoundingBoxes(min_size=1)
        self.tail = v2.Compose(
            [
                v2.RandomHorizontalFlip(p=aug.hflip_prob),
                v2.Resize((height, width)),
                v2.SanitizeBoundingBoxes(min_size=1),
                v2.ToImage(),
                v2.ToDtype(torch.float32, scale=True),
            ]
        )

    def __call__(self, image: Image.Image, boxes: Tensor, labels: Tensor, strong: bool) -> tuple[Tensor, ...]:
        sample = {
            "image": image,
            "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(image.height, image.width)),
            "labels": labels,
        }
        if strong:
            sample = self.zoom_out(self.photometric(sample))
            if len(sample["boxes"]) and torch.rand(()) < self.iou_crop_prob:
                sample = self.iou_crop(sample)
            sample = self.sanitize(sample)
        sample = self.tail(sample)
        return sample["image"], normalised_cxcywh(sample["boxes"]), sample["labels"]


def normalised_cxcywh(boxes: tv_tensors.BoundingBoxes) -> Tensor:
    """[n, 4] xyxy pixels on their canvas → [n, 4] cxcywh in [0, 1] of the canvas."""
    height, width = boxes.canvas_size
    xyxy = boxes.as_subclass(Tensor).float()
    scale = torch.tensor([width, height, width, height], dtype=torch.float32)
    x1, y1, x2, y2 = (xyxy / scale).unbind(-1)
    return torch.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], dim=-1)


def scale_choices(multi_scales: Sequence[int] | Sequence[Sequence[int]]) -> list[tuple[int, int]]:
    """``augmentation.multi_scales`` as (H, W) pairs: an int is a square side."""
    return [(int(s), int(s)) if isinstance(s, int) else (int(s[0]), int(s[1])) for s in multi_scales]


def multi_scale_resize(images: Tensor, scales: list[tuple[int, int]], rng: random.Random) -> Tensor:
    """[B, 3, H, W] → [B, 3, h, w] at a size drawn from ``scales`` (nearest, as the reference's collate);
    boxes are normalised, so they need no change."""
    size = rng.choice(scales)
    return images if tuple(images.shape[-2:]) == size else F.interpolate(images, size=size)
