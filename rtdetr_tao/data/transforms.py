"""The paper's training augmentation (torchvision.transforms.v2), its dynamic switch-off, and the batch-level
multi-scale resize.

Training, per image: RandomPhotometricDistort → RandomZoomOut → RandomIoUCrop → SanitizeBoundingBoxes →
RandomHorizontalFlip → Resize(train_spatial_size) → SanitizeBoundingBoxes. From ``stop_epoch`` on, the three
strong operations (distortion, zoom-out, IoU crop) are off, and so is the multi-scale resize (RT-DETRv2's dynamic
data augmentation).

DEIM's Dense O2O (``train.recipe: deim``): strong augmentation starts at the first mosaic epoch; inside the
mosaic window an image becomes, with ``mosaic_prob``, a 2x2 mosaic of itself and three random others followed by
a random affine (and then skips zoom-out and IoU crop); inside the mixup window a batch is mixed, with
``mixup_prob``, with itself rolled by one. Evaluation uses :func:`rtdetr_tao.data.preprocess.to_model_input`,
which ``rtdetr-deploy`` shares.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import v2

from ..config.dataset import AugmentationSpec

MOSAIC_AFFINE = {"degrees": 10.0, "translate": (0.1, 0.1), "scale": (0.5, 1.5), "fill": 0}
"""DEIM's Mosaic after tiling (configs/base/rt_deim.yml: rotation_range 10, translation_range [0.1, 0.1],
scaling_range [0.5, 1.5], fill_value 0)."""

Sample = tuple[Image.Image, Tensor, Tensor]
"""(PIL image, boxes [n, 4] xyxy pixels, labels [n])"""


@dataclass(frozen=True)
class DenseO2O:
    """DEIM's Dense O2O augmentation: mosaic and mixup probabilities and their [first, end) epoch windows."""

    mosaic_prob: float = 0.0
    mosaic_epochs: tuple[int, int] = (0, 0)
    mixup_prob: float = 0.0
    mixup_epochs: tuple[int, int] = (0, 0)

    @property
    def strong_start(self) -> int:
        """First epoch of strong augmentation: the mosaic start under DEIM's 4-stage policy, else 0."""
        return self.mosaic_epochs[0] if self.mosaic_prob > 0 else 0

    def mosaic_now(self, epoch: int) -> bool:
        return self.mosaic_prob > 0 and self.mosaic_epochs[0] <= epoch < self.mosaic_epochs[1]

    def mixup_now(self, epoch: int) -> bool:
        return self.mixup_prob > 0 and self.mixup_epochs[0] <= epoch < self.mixup_epochs[1]


def mosaic_tiles(samples: Sequence[Sample], tile_size: int) -> tuple[Image.Image, Tensor, Tensor, Tensor]:
    """Four samples, each resized to shorter side ``tile_size``, pasted 2x2 on a black canvas of twice the
    largest tile (DEIM's ``Mosaic``, before its affine) → (canvas, boxes [m, 4] xyxy pixels, labels [m],
    tile of each box [m])."""
    resize = v2.Resize(tile_size)
    tiles = []
    for image, boxes, labels in samples:
        boxes = tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(image.height, image.width))
        resized = resize({"image": image, "boxes": boxes})
        tiles.append((resized["image"], resized["boxes"].as_subclass(Tensor), labels))
    width = max(t[0].width for t in tiles)
    height = max(t[0].height for t in tiles)
    canvas = Image.new(tiles[0][0].mode, (2 * width, 2 * height), color=0)
    all_boxes, all_labels, owner = [], [], []
    for i, (image, boxes, labels) in enumerate(tiles):
        x0, y0 = (i % 2) * width, (i // 2) * height
        canvas.paste(image, (x0, y0))
        limit = torch.tensor([image.width, image.height] * 2, dtype=boxes.dtype)
        boxes = torch.minimum(boxes.clamp(min=0), limit) + torch.tensor([x0, y0, x0, y0], dtype=boxes.dtype)
        all_boxes.append(boxes)
        all_labels.append(labels)
        owner.append(torch.full((len(labels),), i, dtype=torch.int64))
    return canvas, torch.cat(all_boxes), torch.cat(all_labels), torch.cat(owner)


class TrainTransform:
    """``(PIL image, boxes [n, 4] xyxy pixels, labels [n]) → (image float [3, H, W] in [0, 1], boxes [m, 4]
    normalised cxcywh, labels [m])`` with the augmentation of ``aug``; ``strong=False`` after ``stop_epoch``."""

    def __init__(self, aug: AugmentationSpec) -> None:
        height, width = aug.train_spatial_size
        self.mosaic_tile = min(height, width) // 2  # DEIM: Mosaic output_size 320 for 640 inputs
        self.mosaic_affine = v2.RandomAffine(**MOSAIC_AFFINE)
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

    def __call__(
        self, image: Image.Image, boxes: Tensor, labels: Tensor, strong: bool, mosaic_with: Sequence[Sample] = ()
    ) -> tuple[Tensor, ...]:
        """``mosaic_with``: three more samples make a mosaic of this one (strong augmentation only)."""
        if strong and mosaic_with:
            image, boxes, labels, _ = mosaic_tiles([(image, boxes, labels), *mosaic_with], self.mosaic_tile)
        sample = {
            "image": image,
            "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(image.height, image.width)),
            "labels": labels,
        }
        if strong and mosaic_with:
            sample = self.sanitize(self.photometric(self.mosaic_affine(sample)))
        elif strong:
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


def mixup(images: Tensor, targets: list[dict], rng: random.Random) -> tuple[Tensor, list[dict]]:
    """DEIM's batch mixup: each image blended with the previous one (batch rolled by one) at a ratio drawn in
    [0.45, 0.55], keeping both images' boxes and labels. images [B, 3, H, W]."""
    beta = round(rng.uniform(0.45, 0.55), 6)
    mixed = images.roll(shifts=1, dims=0) * (1.0 - beta) + images * beta
    shifted = targets[-1:] + targets[:-1]
    out = [
        {
            **t,
            "boxes": torch.cat([t["boxes"], s["boxes"]]),
            "labels": torch.cat([t["labels"], s["labels"]]),
        }
        for t, s in zip(targets, shifted, strict=True)
    ]
    return mixed, out


def multi_scale_resize(images: Tensor, scales: list[tuple[int, int]], rng: random.Random) -> Tensor:
    """[B, 3, H, W] → [B, 3, h, w] at a size drawn from ``scales`` (nearest, as the reference's collate);
    boxes are normalised, so they need no change."""
    size = rng.choice(scales)
    return images if tuple(images.shape[-2:]) == size else F.interpolate(images, size=size)
