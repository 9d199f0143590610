"""Inference-only rewrite of a trained :class:`RTDETR`: the same outputs, less CPU time."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from .backbone import FrozenBatchNorm2d
from .encoder import RepVggBlock
from .rtdetr import RTDETR


def fuse_conv_norm(conv: nn.Conv2d, norm: nn.BatchNorm2d | FrozenBatchNorm2d) -> nn.Conv2d:
    """One biased conv computing ``norm(conv(x))`` with the norm's running statistics."""
    scale = norm.weight * (norm.running_var + norm.eps).rsqrt()
    bias = conv.bias if conv.bias is not None else torch.zeros_like(norm.running_mean)
    fused = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        conv.groups,
        bias=True,
    ).to(conv.weight)
    with torch.no_grad():
        fused.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
        fused.bias.copy_((bias - norm.running_mean) * scale + norm.bias)
    return fused


def _reparameterize(block: RepVggBlock) -> nn.Sequential:
    """RepVGG block → one 3x3 conv (the 1x1 branch padded into its centre) + the activation."""
    conv3 = fuse_conv_norm(block.conv1.conv, block.conv1.norm)
    conv1 = fuse_conv_norm(block.conv2.conv, block.conv2.norm)
    with torch.no_grad():
        conv3.weight.add_(F.pad(conv1.weight, [1, 1, 1, 1]))
        conv3.bias.add_(conv1.bias)
    return nn.Sequential(conv3, block.act)


def _conv_then(module: nn.Module, norm_name: str) -> bool:
    """Whether ``module`` applies its ``norm_name`` child right after its ``conv`` child: HGNetv2's ConvBNAct, or a
    Sequential with the two adjacent (not any module that merely has both names, e.g. in a timm backbone)."""
    from .hgnetv2 import ConvBNAct

    names = list(module._modules)
    if "conv" not in names or norm_name not in names:
        return False
    if type(module) is ConvBNAct:
        return True
    return isinstance(module, nn.Sequential) and names.index(norm_name) == names.index("conv") + 1


def _fold(module: nn.Module) -> None:
    """In place: every ``conv`` + ``norm`` pair folded, every RepVGG block re-parameterised."""
    for name, child in module.named_children():
        if isinstance(child, RepVggBlock):
            setattr(module, name, _reparameterize(child))
            continue
        for norm_name in ("norm", "bn"):  # ours and the reference's ConvNormLayer; HGNetv2's ConvBNAct
            if not _conv_then(child, norm_name):
                continue
            conv, norm = child.conv, getattr(child, norm_name)
            padded = isinstance(conv, nn.Sequential) and isinstance(conv[-1], nn.Conv2d)  # HGNetv2's one-sided pad
            if (isinstance(conv, nn.Conv2d) or padded) and type(norm) in (nn.BatchNorm2d, FrozenBatchNorm2d):
                if padded:
                    conv[-1] = fuse_conv_norm(conv[-1], norm)
                else:
                    child.conv = fuse_conv_norm(conv, norm)
                setattr(child, norm_name, nn.Identity())
        _fold(child)


@torch.no_grad()
def optimize_for_inference(model: RTDETR) -> RTDETR:
    """An eval-mode copy of ``model`` for inference: BatchNorm folded into the convolutions, RepVGG blocks
    re-parameterised into single 3x3 convolutions, weights and images in ``channels_last`` layout. Outputs equal
    the original's (float rounding aside); the copy cannot be trained, and its state dict no longer follows the
    reference names."""
    model = copy.deepcopy(model).eval()
    _fold(model)
    model.to(memory_format=torch.channels_last)
    model.memory_format = torch.channels_last
    return model
