"""``train.recipe``: the values a training recipe gives the keys a spec leaves null, resolved in one place.

``rtdetrv2`` is the paper's recipe. ``deim`` is DEIM's (Huang et al., CVPR 2025), read from
ShihuaHuang95/DEIM at commit a9aa4adce6b5e97b2a6ca9452bf01b7c35440913:

- ``configs/base/rt_deim.yml``: ``transforms.mosaic_prob: 0.5``, ``collate_fn.mixup_prob: 0.5``,
  ``DEIMCriterion.losses: [mal, boxes]`` with ``gamma: 1.5``, ``lrsheduler: flatcosine`` with ``lr_gamma: 0.5``;
- ``configs/deim_rtdetrv2/deim_r{18,34}vd_120e_coco.yml``: ``epoches: 120``, ``policy.epoch: [4, 64, 117]``,
  ``mixup_epochs: [4, 64]``, ``flat_epoch: 64``, ``no_aug_epoch: 3``;
- ``configs/deim_rtdetrv2/deim_r{50,101}vd_60e_coco.yml`` (and ``r50vd_m``): ``epoches: 60``,
  ``policy.epoch: [4, 34, 58]``, ``mixup_epochs: [4, 34]``, ``flat_epoch: 34``, ``no_aug_epoch: 2``.

At another ``num_epochs`` the stage epochs scale with it (rounded half up), keeping at least one last epoch
without augmentation; the flat-cosine schedule reaches its floor at the augmentation stop epoch, as in every
DEIM RT-DETRv2 config (``epoches - no_aug_epoch == policy.epoch[2]``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .experiment import ExperimentSpec


@dataclass(frozen=True)
class DeimStages:
    """DEIM's schedule for one backbone: total epochs, mosaic/mixup start, flat end, augmentation stop."""

    epochs: int
    start: int
    flat: int
    stop: int


DEIM_STAGES: dict[str, DeimStages] = {
    "resnet_18": DeimStages(120, 4, 64, 117),  # deim_r18vd_120e_coco.yml
    "resnet_34": DeimStages(120, 4, 64, 117),  # deim_r34vd_120e_coco.yml
    "resnet_50": DeimStages(60, 4, 34, 58),  # deim_r50vd_60e_coco.yml, deim_r50vd_m_60e_coco.yml
    "resnet_101": DeimStages(60, 4, 34, 58),  # deim_r101vd_60e_coco.yml
}
"""DEIM's RT-DETRv2 configs, per backbone; another backbone takes ResNet-50's (the default backbone)."""


def stages_of(backbone: str) -> DeimStages:
    return DEIM_STAGES.get(backbone, DEIM_STAGES["resnet_50"])


DEIM_MOSAIC_PROB = 0.5
DEIM_MIXUP_PROB = 0.5


@dataclass(frozen=True)
class Recipe:
    """The resolved training recipe: every value the null keys take."""

    name: str
    num_epochs: int
    loss_types: tuple[str, ...]
    lr_scheduler: str
    flat_epochs: int
    aug_stop_epoch: int
    mosaic_prob: float
    mosaic_epochs: tuple[int, int]
    mixup_prob: float
    mixup_epochs: tuple[int, int]

    @property
    def no_aug_epochs(self) -> int:
        """Epochs after the augmentation stop (FlatCosine holds its floor there)."""
        return max(self.num_epochs - self.aug_stop_epoch, 0)


def _scaled(epoch: int, stages: DeimStages, num_epochs: int) -> int:
    return math.floor(epoch * num_epochs / stages.epochs + 0.5)


def deim_stages(backbone: str, num_epochs: int) -> tuple[int, int, int]:
    """(mosaic/mixup start, flat end, augmentation stop) of DEIM's config for ``backbone``, scaled to
    ``num_epochs``; the stop leaves at least one epoch without augmentation."""
    stages = stages_of(backbone)
    start, flat = _scaled(stages.start, stages, num_epochs), _scaled(stages.flat, stages, num_epochs)
    no_aug = max(1, _scaled(stages.epochs - stages.stop, stages, num_epochs))
    return start, flat, max(num_epochs - no_aug, 0)


def resolve_recipe(spec: ExperimentSpec) -> Recipe:
    """``train.recipe``'s values for every recipe key the spec leaves null (a key that is set wins)."""
    train, model, aug = spec.train, spec.model, spec.dataset.augmentation
    epochs = train.num_epochs
    start, flat, deim_stop = deim_stages(model.backbone, epochs)
    deim = train.recipe == "deim"
    defaults: dict[str, Any] = {
        "loss_types": ("mal", "boxes") if deim else ("vfl", "boxes"),
        "lr_scheduler": "FlatCosine" if deim else "MultiStep",
        "stop_epoch": deim_stop if deim else max(epochs - 2, 0),
        "mosaic_prob": DEIM_MOSAIC_PROB if deim else 0.0,
        "mixup_prob": DEIM_MIXUP_PROB if deim else 0.0,
    }
    mosaic_epochs = tuple(aug.mosaic_epochs) if aug.mosaic_epochs is not None else (start, flat)

    def pick(value: Any, key: str) -> Any:
        return value if value is not None else defaults[key]

    return Recipe(
        name=train.recipe,
        num_epochs=epochs,
        loss_types=tuple(pick(model.loss_types, "loss_types")),
        lr_scheduler=pick(train.optim.lr_scheduler, "lr_scheduler"),
        flat_epochs=train.optim.flat_epochs if train.optim.flat_epochs is not None else flat,
        aug_stop_epoch=pick(aug.stop_epoch, "stop_epoch"),
        mosaic_prob=pick(aug.mosaic_prob, "mosaic_prob"),
        mosaic_epochs=mosaic_epochs,  # type: ignore[arg-type]
        mixup_prob=pick(aug.mixup_prob, "mixup_prob"),
        mixup_epochs=tuple(aug.mixup_epochs) if aug.mixup_epochs is not None else mosaic_epochs,  # type: ignore[arg-type]
    )


def recipe_num_epochs(data: dict[str, Any]) -> dict[str, Any]:
    """A raw spec mapping with ``train.num_epochs`` set to DEIM's epochs for the backbone when ``train.recipe``
    is deim and the spec gives no ``num_epochs`` (before validation; presets name their backbone)."""
    from .model import PRESETS, ModelSpec

    train = data.get("train")
    if not isinstance(train, dict) or train.get("recipe") != "deim" or "num_epochs" in train:
        return data
    model = data.get("model") if isinstance(data.get("model"), dict) else {}
    backbone = model.get("backbone") or PRESETS.get(model.get("preset") or "", {}).get("backbone")
    backbone = backbone or ModelSpec.model_fields["backbone"].default
    return {**data, "train": {**train, "num_epochs": stages_of(str(backbone)).epochs}}
