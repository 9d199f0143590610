"""Builders: ``model.*`` spec → detector, post-processor and loss."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from ..config.backbones import BackboneEntry, backbone_entry
from ..config.model import ModelSpec
from .backbone import PResNet
from .decoder import RTDETRTransformerv2
from .encoder import HybridEncoder
from .postprocess import PostProcessor
from .rtdetr import RTDETR

log = logging.getLogger(__name__)


def _spec(model_spec: ModelSpec | dict[str, Any]) -> ModelSpec:
    return model_spec if isinstance(model_spec, ModelSpec) else ModelSpec.model_validate(model_spec)


def _resnet(entry: BackboneEntry, spec: ModelSpec) -> nn.Module:
    return PResNet(int(entry.arch), spec.return_interm_indices, spec.freeze_at, spec.freeze_norm)


def _hgnetv2(entry: BackboneEntry, spec: ModelSpec) -> nn.Module:
    from .hgnetv2 import HGNetv2

    return HGNetv2(entry.arch, spec.return_interm_indices, spec.freeze_at, spec.freeze_norm)


def _fan(entry: BackboneEntry, spec: ModelSpec) -> nn.Module:
    from .fan import FAN

    return FAN(entry.arch, spec.return_interm_indices, spec.freeze_at, spec.freeze_norm, **entry.kwargs)


def _timm(entry: BackboneEntry, spec: ModelSpec) -> nn.Module:
    from .timm_backbone import TimmBackbone

    return TimmBackbone(entry.arch, spec.return_interm_indices, spec.freeze_at, spec.freeze_norm, entry.kwargs)


BACKBONE_FAMILIES: dict[str, Callable[[BackboneEntry, ModelSpec], nn.Module]] = {
    "resnet": _resnet,
    "hgnetv2": _hgnetv2,
    "fan": _fan,
    "timm": _timm,
}
"""Builder of each backbone family of :data:`rtdetr_tao.config.backbones.BACKBONES`; each returns a module with
``out_channels`` / ``out_strides`` whose forward maps [B, 3, H, W] to one map per ``return_interm_indices`` stage."""


def build_backbone(model_spec: ModelSpec | dict[str, Any]) -> nn.Module:
    """The backbone of ``model_spec``: ``model.backbone``, ``return_interm_indices``, ``freeze_at``, ``freeze_norm``."""
    spec = _spec(model_spec)
    entry = backbone_entry(spec.backbone)
    return BACKBONE_FAMILIES[entry.family](entry, spec)


def build_model(
    model_spec: ModelSpec | dict[str, Any],
    num_classes: int,
    *,
    eval_spatial_size: tuple[int, int] | None = None,
    activation_checkpoint: bool = False,
) -> RTDETR:
    """The RT-DETRv2 detector of ``model_spec`` (a :class:`ModelSpec` or a dict of ``model.*`` keys).

    Args:
        num_classes: detected classes (logits per query).
        eval_spatial_size: (H, W) of the inference input; precomputes anchors and position embeddings for it, which
            keeps the eval-mode forward free of data-dependent setup (ONNX export). None: computed per input.
        activation_checkpoint: recompute the encoder's and decoder's transformer layers in the backward pass
            (training only; less memory, more compute).

    ``pretrained_backbone_path`` is loaded through :func:`rtdetr_tao.model.weights.load_backbone_weights`.
    """
    spec = _spec(model_spec)
    backbone = build_backbone(spec)
    encoder = HybridEncoder(
        in_channels=backbone.out_channels,
        feat_strides=spec.feat_strides,
        hidden_dim=spec.encoder_width,
        nhead=spec.nheads,
        dim_feedforward=spec.dim_feedforward,
        dropout=spec.dropout_ratio,
        enc_act=spec.enc_act,
        use_encoder_idx=spec.use_encoder_idx,
        num_encoder_layers=spec.enc_layers,
        pe_temperature=spec.pe_temperature,
        expansion=spec.expansion,
        depth_mult=spec.depth_mult,
        act=spec.act,
        eval_spatial_size=eval_spatial_size,
    )
    decoder = RTDETRTransformerv2(
        num_classes=num_classes,
        hidden_dim=spec.hidden_dim,
        num_queries=spec.num_queries,
        feat_channels=spec.feat_channels,
        feat_strides=spec.feat_strides,
        num_levels=spec.num_feature_levels,
        num_points=spec.points_per_level,
        nhead=spec.nheads,
        num_layers=spec.dec_layers,
        dim_feedforward=spec.dec_dim_feedforward,
        dropout=spec.dropout_ratio,
        num_denoising=spec.dn_number,
        label_noise_ratio=spec.label_noise_ratio,
        box_noise_scale=spec.box_noise_scale,
        eval_spatial_size=eval_spatial_size,
        eval_idx=spec.eval_idx,
        aux_loss=spec.aux_loss,
        cross_attn_method=spec.cross_attn_method,
        query_select_method=spec.query_select_method,
    )
    model = RTDETR(backbone, encoder, decoder, activation_checkpoint=activation_checkpoint)
    if spec.pretrained_backbone_path:
        from .weights import load_backbone_weights

        log.info("backbone weights: %s", load_backbone_weights(model, spec.pretrained_backbone_path).summary())
    if not spec.train_backbone:
        model.backbone.requires_grad_(False)
    return model


def build_postprocessor(model_spec: ModelSpec | dict[str, Any]) -> PostProcessor:
    """Top-``num_select`` post-processor: ``(outputs, orig_sizes [B, 2] (w, h)) → [{labels, boxes, scores}]``."""
    return PostProcessor(_spec(model_spec).num_select)


def build_criterion(
    model_spec: ModelSpec | dict[str, Any], num_classes: int, loss_types: Sequence[str] | None = None
) -> nn.Module:
    """The reference's RT-DETRv2 loss: Hungarian matching, varifocal (or DEIM's mal) + L1 + GIoU terms.

    ``loss_types``: the resolved recipe's (``ExperimentSpec.recipe.loss_types``); None: ``model.loss_types``, or
    RT-DETRv2's [vfl, boxes] when that is null.
    """
    from .criterion import SetCriterion
    from .matcher import HungarianMatcher

    spec = _spec(model_spec)
    matcher = HungarianMatcher(
        cost_class=spec.class_cost,
        cost_bbox=spec.bbox_cost,
        cost_giou=spec.giou_cost,
        alpha=spec.matcher_alpha,
        gamma=spec.matcher_gamma,
    )
    weight_dict = {
        "loss_vfl": spec.vfl_loss_coef,
        "loss_mal": spec.mal_loss_coef,
        "loss_bbox": spec.bbox_loss_coef,
        "loss_giou": spec.giou_loss_coef,
    }
    losses = loss_types if loss_types is not None else (spec.loss_types or ("vfl", "boxes"))
    return SetCriterion(
        matcher,
        weight_dict=weight_dict,
        losses=list(losses),
        alpha=spec.alpha,
        gamma=spec.gamma,
        num_classes=num_classes,
        mal_gamma=spec.mal_gamma,
        mal_alpha=spec.mal_alpha,
    )
