"""The RT-DETRv2 detector: backbone → hybrid encoder → decoder.

``RTDETR.forward(images, targets=None)`` returns a dict (B images, Q = ``num_queries``, C = ``num_classes``,
L = decoder layers, N_dn = denoising queries):

* ``pred_logits`` [B, Q, C]: class logits (sigmoid / focal style, no background class);
* ``pred_boxes`` [B, Q, 4]: boxes, normalised ``cx, cy, w, h`` in [0, 1] of the input image.

In eval mode these come from decoder layer ``eval_idx`` and the dict holds nothing else. In training they come
from the last layer and, when the decoder's ``aux_loss`` is on, the dict also holds:

* ``aux_outputs``: list of L - 1 dicts ``{"pred_logits": [B, Q, C], "pred_boxes": [B, Q, 4]}``, layers 0..L-2;
* ``enc_aux_outputs``: list of 1 dict, the encoder's top-Q proposals: ``pred_logits`` [B, Q, C] ([B, Q, 1] with
  ``query_select_method="agnostic"``) and ``pred_boxes`` [B, Q, 4];
* ``enc_meta``: ``{"class_agnostic": bool}`` (True with ``query_select_method="agnostic"``);
* with denoising (``num_denoising > 0`` and ``targets`` given):

  * ``dn_aux_outputs``: list of L dicts ``{"pred_logits": [B, N_dn, C], "pred_boxes": [B, N_dn, 4]}``, every layer;
  * ``dn_meta``: ``{"dn_positive_idx": tuple of B int64 tensors [n_i * num_group] (the positive denoising query
    of each ground-truth box, group after group), "dn_num_group": int, "dn_num_split": [N_dn, Q]}``.

``targets`` (training only): one dict per image with ``labels`` [n_i] int64 and ``boxes`` [n_i, 4] normalised
cxcywh, on the images' device. The same layout as the reference ``RTDETRTransformerv2``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .backbone import PResNet
from .decoder import RTDETRTransformerv2
from .encoder import HybridEncoder


class RTDETR(nn.Module):
    """``decoder(encoder(backbone(images)), targets)``.

    Args:
        activation_checkpoint: recompute the encoder's and the decoder's transformer layers in the backward pass
            (``torch.utils.checkpoint``) to save training memory; no effect in eval mode.

    ``memory_format``: the layout images are given to the backbone in; ``torch.channels_last`` (with the weights
    converted too, as ``optimize_for_inference`` does) makes the convolutions markedly faster on CPU.
    """

    def __init__(
        self,
        backbone: PResNet,
        encoder: HybridEncoder,
        decoder: RTDETRTransformerv2,
        activation_checkpoint: bool = False,
    ) -> None:
        super().__init__()
        self.backbone, self.encoder, self.decoder = backbone, encoder, decoder
        self.activation_checkpoint = activation_checkpoint
        self.memory_format = torch.contiguous_format

    @property
    def activation_checkpoint(self) -> bool:
        return self.decoder.decoder.activation_checkpoint

    @activation_checkpoint.setter
    def activation_checkpoint(self, value: bool) -> None:
        for stack in [*self.encoder.encoder, self.decoder.decoder]:
            stack.activation_checkpoint = bool(value)

    def forward(self, images: Tensor, targets: list[dict[str, Tensor]] | None = None) -> dict[str, Any]:
        """images [B, 3, H, W] float in [0, 1] → the output dict described in the module docstring."""
        images = images.contiguous(memory_format=self.memory_format)
        return self.decoder(self.encoder(self.backbone(images)), targets)
