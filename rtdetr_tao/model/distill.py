"""Teacher-student distillation losses for RT-DETRv2.

Outputs are named as in TAO's bindings:

* ``srcs``: the hybrid encoder's projected input maps, the AIFI level replaced by the AIFI output ([B, C, H, W] per
  level);
* ``dsrcs``: the encoder's output maps, which the decoder reads ([B, C, H, W] per level);
* ``pred_logits`` [B, Q, C] and ``pred_boxes`` [B, Q, 4];
* any module name of the model (its output tensor, or list of tensors).

Criteria, each multiplied by its binding's ``weight`` and by ``coef`` (``model.distillation_loss_coef``):

* ``L1`` / ``L2`` (= ``MSE``): mean absolute / squared difference;
* ``KL``: ``T² · mean(KL(σ(t/T) ‖ σ(s/T)))`` over every query and class, the binary KL of the sigmoid scores;
* ``IOU``: feature imitation on the objects the teacher finds. Teacher query ``q`` (the ``top_k`` best by score)
  gets the weight ``w_q = max_c σ(logit_qc) · max_j IoU(box_q, gt_j)``, both boxes as normalised xyxy. On a map of
  size H x W, cell (y, x) gets ``m = max_q w_q · [cell centre inside box_q]`` and the loss of the level is
  ``Σ m ‖s − t‖² / (C · max(Σ m, 1))``, summed over levels (TAO compared pixel xyxy with normalised cxcywh boxes,
  which made its mask nearly uniform).

Where a student map has other channels than the teacher's, a learned 1x1 convolution (a linear layer for
[B, N, C] tensors) projects it, and a bilinear resize matches the spatial size.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import SpecError
from ..ops.boxes import box_cxcywh_to_xyxy, box_iou
from .criterion import to_float

OUTPUT_NAMES = ("pred_logits", "pred_boxes")
FEATURE_NAMES = ("srcs", "dsrcs")


class FeatureTaps:
    """Forward hooks that keep the named outputs of the last forward pass of ``model`` (an ``RTDETR``)."""

    def __init__(self, model: nn.Module, names: Sequence[str]) -> None:
        self.model, self.values = model, {}
        modules = dict(model.named_modules())
        unknown = [n for n in names if n not in FEATURE_NAMES + OUTPUT_NAMES and n not in modules]
        if unknown:
            valid = [*FEATURE_NAMES, *OUTPUT_NAMES, *sorted(n for n in modules if n and n.count(".") < 2)]
            raise SpecError(f"distill.bindings: no output named {unknown}; valid names include {valid}")
        encoder = model.encoder
        for name in names:
            if name == "srcs":
                self._tap_srcs(encoder)
            elif name == "dsrcs":
                encoder.register_forward_hook(lambda _m, _i, out: self.values.__setitem__("dsrcs", list(out)))
            elif name not in OUTPUT_NAMES:
                modules[name].register_forward_hook(lambda _m, _i, out, n=name: self.values.__setitem__(n, out))

    def _tap_srcs(self, encoder: nn.Module) -> None:
        levels: dict[int, Tensor] = {}
        for i, proj in enumerate(encoder.input_proj):
            proj.register_forward_hook(lambda _m, _i, out, i=i: levels.__setitem__(i, out))
        for layer, idx in zip(encoder.encoder, encoder.use_encoder_idx, strict=True):

            def replace(_m: nn.Module, _i: Any, out: Tensor, idx: int = idx) -> None:
                b, c, h, w = levels[idx].shape
                levels[idx] = out.permute(0, 2, 1).reshape(b, c, h, w)

            layer.register_forward_hook(replace)
        encoder.register_forward_hook(
            lambda _m, _i, _o: self.values.__setitem__("srcs", [levels[i] for i in sorted(levels)])
        )

    def get(self, name: str, outputs: dict[str, Any]) -> list[Tensor]:
        value = outputs[name] if name in OUTPUT_NAMES else self.values[name]
        return list(value) if isinstance(value, list | tuple) else [value]


def _projector(student: Tensor, teacher: Tensor) -> nn.Module | None:
    if student.shape[1 if student.dim() == 4 else -1] == teacher.shape[1 if teacher.dim() == 4 else -1]:
        return None
    if student.dim() == 4:
        return nn.Conv2d(student.shape[1], teacher.shape[1], 1)
    return nn.Linear(student.shape[-1], teacher.shape[-1])


class DistillationLoss(nn.Module):
    """Detection loss of the student plus the binding losses against a frozen teacher.

    ``forward(model, images, targets, autocast)`` follows the trainer's loss signature. The teacher is held
    outside the module's state (not checkpointed with the projections); :meth:`build` attaches the student and
    creates the projections before the optimizer is made.
    """

    def __init__(
        self,
        teacher: nn.Module,
        bindings: Sequence[Any],
        criterion: nn.Module,
        *,
        coef: float = 1.0,
        top_k: int = 100,
    ) -> None:
        super().__init__()
        self._teacher = [teacher.eval().requires_grad_(False)]
        self.bindings, self.criterion, self.coef, self.top_k = list(bindings), criterion, coef, top_k
        self.projectors = nn.ModuleDict()
        self._student_taps: FeatureTaps | None = None
        self._teacher_taps = FeatureTaps(teacher, [b.teacher_module_name for b in self.bindings])

    @property
    def teacher(self) -> nn.Module:
        return self._teacher[0]

    def _apply(self, fn: Any, recurse: bool = True) -> DistillationLoss:  # .to(device) moves the teacher too
        super()._apply(fn, recurse)
        self._teacher[0]._apply(fn, recurse)
        return self

    def build(self, student: nn.Module, images: Tensor) -> None:
        """Attach to ``student`` and create the projections from the shapes of one eval-mode pass on ``images``."""
        self._student_taps = FeatureTaps(student, [b.student_module_name for b in self.bindings])
        with torch.no_grad():
            was = student.training
            outputs = student.eval()(images)
            student.train(was)
            teacher_out = self.teacher(images)
        for i, binding in enumerate(self.bindings):
            s_list = self._student_taps.get(binding.student_module_name, outputs)
            t_list = self._teacher_taps.get(binding.teacher_module_name, teacher_out)
            if len(s_list) != len(t_list):
                raise SpecError(
                    f"distill.bindings[{i}]: student '{binding.student_module_name}' has {len(s_list)} tensors, "
                    f"teacher '{binding.teacher_module_name}' {len(t_list)}; bind outputs with the same levels"
                )
            if binding.criterion == "KL" and s_list[0].shape != t_list[0].shape:
                raise SpecError(
                    f"distill.bindings[{i}]: KL needs equal shapes, got {tuple(s_list[0].shape)} and "
                    f"{tuple(t_list[0].shape)}; give student and teacher the same num_queries and classes"
                )
            for level, (s, t) in enumerate(zip(s_list, t_list, strict=True)):
                proj = _projector(s, t)
                if proj is not None:
                    self.projectors[f"{i}_{level}"] = proj.to(s.device)

    def _align(self, i: int, level: int, s: Tensor, t: Tensor) -> Tensor:
        key = f"{i}_{level}"
        if key in self.projectors:
            s = self.projectors[key](s)
        if s.dim() == 4 and s.shape[-2:] != t.shape[-2:]:
            s = F.interpolate(s, size=t.shape[-2:], mode="bilinear", align_corners=False)
        return s

    def _mask(self, teacher_out: dict[str, Tensor], targets: list[dict[str, Tensor]], size: tuple[int, int]) -> Tensor:
        """[B, 1, H, W] imitation weights from the teacher's top queries (see the module docstring)."""
        scores = teacher_out["pred_logits"].sigmoid().amax(-1)  # [B, Q]
        top = scores.topk(min(self.top_k, scores.shape[1]), dim=1)
        height, width = size
        ys = (torch.arange(height, device=scores.device) + 0.5) / height
        xs = (torch.arange(width, device=scores.device) + 0.5) / width
        masks = []
        for b, target in enumerate(targets):
            boxes = box_cxcywh_to_xyxy(teacher_out["pred_boxes"][b, top.indices[b]])  # [K, 4]
            if len(target["boxes"]):
                iou = box_iou(boxes, box_cxcywh_to_xyxy(target["boxes"].to(boxes)))[0].amax(1)
            else:
                iou = torch.zeros(len(boxes), device=boxes.device)
            weight = top.values[b] * iou  # [K]
            inside_x = (xs[None] >= boxes[:, 0:1]) & (xs[None] <= boxes[:, 2:3])  # [K, W]
            inside_y = (ys[None] >= boxes[:, 1:2]) & (ys[None] <= boxes[:, 3:4])  # [K, H]
            inside = inside_y[:, :, None] & inside_x[:, None, :]  # [K, H, W]
            masks.append((weight[:, None, None] * inside).amax(0) if len(boxes) else torch.zeros(height, width))
        return torch.stack(masks)[:, None]

    def forward(self, model: nn.Module, images: Tensor, targets: list[dict[str, Tensor]], autocast: Any) -> dict:
        if self._student_taps is None:
            raise RuntimeError("DistillationLoss.build() must run before training")
        with torch.no_grad():
            teacher_out = self.teacher(images)
        with autocast():
            outputs = model(images, targets)
        losses = self.criterion(to_float(outputs), targets)
        for i, binding in enumerate(self.bindings):
            s_list = self._student_taps.get(binding.student_module_name, outputs)
            t_list = self._teacher_taps.get(binding.teacher_module_name, teacher_out)
            total = images.new_zeros(())
            for level, (s, t) in enumerate(zip(s_list, t_list, strict=True)):
                s, t = self._align(i, level, s.float(), t.float()), t.float()
                if binding.criterion == "L1":
                    total = total + (s - t).abs().mean()
                elif binding.criterion in ("L2", "MSE"):
                    total = total + (s - t).pow(2).mean()
                elif binding.criterion == "KL":
                    temp = binding.temperature
                    p_t, log_s = torch.sigmoid(t / temp), F.logsigmoid(s / temp)
                    log_1s = F.logsigmoid(-s / temp)
                    kl = p_t * (torch.log(p_t.clamp_min(1e-8)) - log_s) + (1 - p_t) * (
                        torch.log((1 - p_t).clamp_min(1e-8)) - log_1s
                    )
                    total = total + temp**2 * kl.mean()
                else:  # IOU
                    mask = self._mask(teacher_out, targets, tuple(t.shape[-2:]))
                    total = total + (mask * (s - t).pow(2)).sum() / (t.shape[1] * mask.sum().clamp_min(1.0))
            losses[f"loss_distill_{i}_{binding.criterion.lower()}"] = self.coef * binding.weight * total
        return losses
