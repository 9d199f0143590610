"""The values ``model.backbone`` accepts: one entry per backbone, naming its family and architecture.

Torch-free, so spec validation knows every backbone without building one; :mod:`rtdetr_tao.model.build` maps each
family to the module that builds it. Every backbone exposes four stages at strides 4 / 8 / 16 / 32 (stage ``i`` has
stride ``2 ** (i + 2)``), which ``model.return_interm_indices`` selects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

TIMM_PREFIX = "timm:"
"""``model.backbone: timm:<model name>`` builds any timm model that supports ``features_only``."""

DEFAULT_LR_BACKBONE = 1e-5
"""Backbone learning rate for backbones without an official RT-DETRv2 recipe (that of RT-DETRv2-L)."""


@dataclass(frozen=True)
class BackboneEntry:
    """One ``model.backbone`` value.

    ``family``: key of the builder in :data:`rtdetr_tao.model.build.BACKBONE_FAMILIES`.
    ``arch``: the family's architecture name (ResNet depth, HGNetv2 or FAN size, timm model name).
    ``channels``: output channels of stages 0..3 (strides 4, 8, 16, 32); None: known once built (``timm:*``).
    ``lr_backbone``: RT-DETRv2's backbone learning rate for it (paper Table 1 / the official configs).
    ``kwargs``: architecture arguments passed to the family's builder (timm model arguments, FAN's drop path).
    """

    family: str
    arch: str
    channels: tuple[int, int, int, int] | None
    lr_backbone: float = DEFAULT_LR_BACKBONE
    kwargs: dict[str, Any] = field(default_factory=dict)


def _timm(arch: str, channels: tuple[int, int, int, int], **kwargs: Any) -> BackboneEntry:
    return BackboneEntry("timm", arch, channels, kwargs=kwargs)


def _fan(size: str, embed_dim: int) -> BackboneEntry:
    # stage 2 is the FAN tokens (embed_dim wide), stage 3 TAO's 768-channel stride-2 conv of the last tokens;
    # TAO's RT-DETR trains every FAN block with stochastic depth 0.3
    return BackboneEntry("fan", size, (128, 256, embed_dim, 768), kwargs={"drop_path": 0.3})


BACKBONES: dict[str, BackboneEntry] = {
    "resnet_18": BackboneEntry("resnet", "18", (64, 128, 256, 512), 1e-4),
    "resnet_34": BackboneEntry("resnet", "34", (64, 128, 256, 512), 5e-5),
    "resnet_50": BackboneEntry("resnet", "50", (256, 512, 1024, 2048), 1e-5),
    "resnet_101": BackboneEntry("resnet", "101", (256, 512, 1024, 2048), 1e-6),
    # official RT-DETRv2 HGNetv2 (rtdetrv2_hgnetv2_{l,x,h}_6x_coco.yml): backbone lr 5e-6 / 1e-6 / 5e-6
    "hgnetv2_l": BackboneEntry("hgnetv2", "L", (128, 512, 1024, 2048), 5e-6),
    "hgnetv2_x": BackboneEntry("hgnetv2", "X", (128, 512, 1024, 2048), 1e-6),
    "hgnetv2_h": BackboneEntry("hgnetv2", "H", (192, 512, 1024, 2048), 5e-6),
    # TAO's ConvNeXt and EfficientViT values, built by timm
    "convnext_tiny": _timm("convnext_tiny", (96, 192, 384, 768)),
    "convnext_small": _timm("convnext_small", (96, 192, 384, 768)),
    "convnext_base": _timm("convnext_base", (128, 256, 512, 1024)),
    "convnext_large": _timm("convnext_large", (192, 384, 768, 1536)),
    "convnext_xlarge": _timm("convnext_xlarge", (256, 512, 1024, 2048)),
    "efficientvit_b0": _timm("efficientvit_b0", (16, 32, 64, 128)),
    "efficientvit_b1": _timm("efficientvit_b1", (32, 64, 128, 256)),
    "efficientvit_b2": _timm("efficientvit_b2", (48, 96, 192, 384)),
    "efficientvit_b3": _timm("efficientvit_b3", (64, 128, 256, 512)),
    # EfficientViT-L0 (MIT's efficientvit_backbone_l0) is L1's architecture with depths 1, 1, 1, 4, 4: equal to MIT's
    # code in float64 given its attention numerics (benchmarks/efficientvit_parity.py, tests/test_efficientvit_mit.py)
    "efficientvit_l0": _timm("efficientvit_l1", (64, 128, 256, 512), depths=(1, 1, 1, 4, 4)),
    "efficientvit_l1": _timm("efficientvit_l1", (64, 128, 256, 512)),
    "efficientvit_l2": _timm("efficientvit_l2", (64, 128, 256, 512)),
    "efficientvit_l3": _timm("efficientvit_l3", (128, 256, 512, 1024)),
    # TAO's FAN-hybrid values (fan_{tiny_8,small_12,base_16,large_16}_p4_hybrid), built by rtdetr_tao (model/fan.py)
    "fan_tiny": _fan("tiny", 192),
    "fan_small": _fan("small", 384),
    "fan_base": _fan("base", 448),
    "fan_large": _fan("large", 480),
}
"""Every named backbone; ``timm:<name>`` values are validated when the model is built."""


def check_backbone(name: str) -> str:
    """``name`` if ``model.backbone`` accepts it, else ValueError naming the supported values."""
    if name in BACKBONES or (name.startswith(TIMM_PREFIX) and len(name) > len(TIMM_PREFIX)):
        return name
    raise ValueError(f"{name!r}: unknown backbone; use one of {', '.join(BACKBONES)} or timm:<timm model name>")


def backbone_entry(name: str) -> BackboneEntry:
    """The entry of a valid ``model.backbone`` value (``timm:<name>`` gives a timm entry without known channels)."""
    return BACKBONES.get(name) or BackboneEntry("timm", check_backbone(name).removeprefix(TIMM_PREFIX), None)


def lr_backbone(name: str) -> float:
    """RT-DETRv2's backbone learning rate for ``model.backbone`` ``name``."""
    entry = BACKBONES.get(name)
    return entry.lr_backbone if entry else DEFAULT_LR_BACKBONE
