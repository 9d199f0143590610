"""``rtdetr distill``: train the student ``model`` with a frozen teacher (``distill.teacher``, weights from
``distill.pretrained_teacher_model_path``) and the losses of ``distill.bindings`` added to the detection loss
(formulas in :mod:`rtdetr_tao.model.distill`). Everything else (checkpoints, status.json with the distillation
losses, TensorBoard, resume, torchrun) is ``rtdetr train``'s; results go to ``results_dir/distill/``.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from ..config import ExperimentSpec
from ..engine.setup import JobContext
from ..errors import SpecError
from .train import TrainResult, train

log = logging.getLogger(__name__)


def _teacher(spec: ExperimentSpec) -> nn.Module:
    from ..model.build import build_model
    from ..model.weights import load_weights

    path = spec.distill.pretrained_teacher_model_path
    teacher = build_model(spec.distill.teacher, spec.dataset.num_classes)
    report = load_weights(teacher, path)
    if not report.complete:
        raise SpecError(
            f"the teacher weights {path} do not fit distill.teacher ({report.summary()}); set distill.teacher to "
            "the architecture they were trained with"
        )
    log.info("teacher: %s", report.summary())
    return teacher


def run(spec: ExperimentSpec) -> TrainResult:
    """Distil ``distill.teacher`` into ``model``."""
    from ..model.distill import DistillationLoss

    teacher = _teacher(spec)

    def init_student(model: nn.Module, ctx: JobContext) -> None:
        if spec.model.load_teacher_enc_dec:  # start the student's encoder and decoder from the teacher's
            own = model.state_dict()
            shared = {
                k: v for k, v in teacher.state_dict().items()
                if k.startswith(("encoder.", "decoder.")) and k in own and own[k].shape == v.shape
            }  # fmt: skip
            model.load_state_dict(shared, strict=False)
            log.info("student: %d encoder/decoder tensors copied from the teacher", len(shared))

    def make_loss(spec: ExperimentSpec, criterion: nn.Module, ctx: JobContext, model: nn.Module) -> nn.Module:
        loss = DistillationLoss(teacher, spec.distill.bindings, criterion, coef=spec.model.distillation_loss_coef).to(
            ctx.device
        )
        height, width = spec.dataset.augmentation.train_spatial_size
        loss.build(model, torch.rand(1, 3, height, width, device=ctx.device))
        return loss

    return train(spec, action="distill", make_loss=make_loss, init_model=init_student)
