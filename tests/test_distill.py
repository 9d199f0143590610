"""rtdetr distill: a tiny student from a trained tiny teacher with every criterion, resume, and the errors."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from test_export_deploy import trained  # noqa: F401 - the trained tiny model, used as the teacher
from test_train import TINY_MODEL

from rtdetr_tao.cli import main
from rtdetr_tao.config import load_spec

STUDENT = {**TINY_MODEL, "hidden_dim": 16, "enc_hidden_dim": 16, "feat_channels": [16, 16, 16], "nheads": 2}
BINDINGS = [
    {"student_module_name": "srcs", "teacher_module_name": "srcs", "criterion": "IOU", "weight": 20},
    {"student_module_name": "dsrcs", "teacher_module_name": "dsrcs", "criterion": "L2"},
    {"student_module_name": "backbone", "teacher_module_name": "backbone", "criterion": "L1"},
    {"student_module_name": "pred_logits", "teacher_module_name": "pred_logits", "criterion": "KL", "temperature": 2},
]


def _distill_spec(trained, tmp_path, **distill) -> str:  # noqa: F811
    spec = yaml.safe_load(trained["spec"].read_text())
    spec["results_dir"] = str(tmp_path / "results")
    spec["model"] = STUDENT
    spec["train"]["num_epochs"] = 1
    spec["distill"] = {
        "teacher": TINY_MODEL,
        "pretrained_teacher_model_path": str(trained["ckpt"]),
        "bindings": BINDINGS,
        **distill,
    }
    path = tmp_path / "distill.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path)


def test_distill_trains_only_the_student_and_resumes(trained, tmp_path) -> None:  # noqa: F811
    spec = _distill_spec(trained, tmp_path)
    assert main(["distill", "-e", spec]) == 0
    out = tmp_path / "results" / "distill"
    records = [json.loads(line) for line in (out / "status.json").read_text().splitlines()]
    losses = next(r["losses"] for r in records if r.get("losses"))
    for name in ("loss_distill_0_iou", "loss_distill_1_l2", "loss_distill_2_l1", "loss_distill_3_kl", "loss_vfl"):
        assert name in losses and losses[name] == losses[name]  # present and not NaN
    checkpoint = torch.load(out / "model_epoch_000.pth", weights_only=True)
    projections = checkpoint["loss"]
    assert any(k.startswith("projectors.") for k in projections)  # 16 → 32 channels: learned 1x1 projections
    assert projections["projectors.0_0.weight"].shape == (32, 16, 1, 1)
    teacher = torch.load(trained["ckpt"], weights_only=True)["model"]
    assert checkpoint["model"]["decoder.enc_output.proj.weight"].shape == (16, 16)  # the student was saved
    assert teacher["decoder.enc_output.proj.weight"].shape == (32, 32)
    assert main(["distill", "-e", spec, "train.num_epochs=2"]) == 0  # resumes from epoch 0
    records = [json.loads(line) for line in (out / "status.json").read_text().splitlines()]
    second_run = records[max(i for i, r in enumerate(records) if r["status"] == "STARTED") :]
    assert {r["epoch"] for r in second_run if r.get("epoch") is not None} == {1}  # epoch 0 was not redone
    assert (out / "model_epoch_001.pth").is_file()
    assert torch.equal(torch.load(trained["ckpt"], weights_only=True)["model"]["decoder.enc_output.proj.weight"],
                       teacher["decoder.enc_output.proj.weight"])  # fmt: skip


@pytest.mark.parametrize("recipe", ["rtdetrv2", "deim"])
def test_gradients_reach_the_student_and_projections_only(trained, recipe) -> None:  # noqa: F811
    from contextlib import nullcontext

    from rtdetr_tao.config.distill import BindingSpec
    from rtdetr_tao.model.build import build_criterion, build_model
    from rtdetr_tao.model.distill import DistillationLoss
    from rtdetr_tao.model.weights import load_weights

    spec = load_spec(str(trained["spec"]), [f"train.recipe={recipe}"], action=None).spec
    teacher = build_model(TINY_MODEL, 4)
    load_weights(teacher, trained["ckpt"])
    student = build_model(STUDENT, 4).train()
    bindings = [BindingSpec.model_validate(b) for b in BINDINGS]
    loss = DistillationLoss(teacher, bindings, build_criterion(spec.model, 4, loss_types=spec.recipe.loss_types))
    loss.build(student, torch.rand(1, 3, 64, 64))
    targets = [{"labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.4, 0.4]])}] * 2
    losses = loss(student, torch.rand(2, 3, 64, 64), targets, nullcontext)
    assert ("loss_mal" in losses) == (recipe == "deim") and "loss_distill_0_iou" in losses
    sum(losses.values()).backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None for p in loss.projectors.parameters())
    assert sum(p.grad is not None for p in student.parameters()) > 0.9 * len(list(student.parameters()))


def test_distillation_loss_coef_scales_the_binding_losses_only(trained) -> None:  # noqa: F811
    from contextlib import nullcontext

    from rtdetr_tao.config.distill import BindingSpec
    from rtdetr_tao.model.build import build_criterion, build_model
    from rtdetr_tao.model.distill import DistillationLoss

    spec = load_spec(str(trained["spec"]), [], action=None).spec
    teacher, student = build_model(TINY_MODEL, 4), build_model(STUDENT, 4).train()
    bindings = [BindingSpec.model_validate(b) for b in BINDINGS]
    images = torch.rand(2, 3, 64, 64)
    targets = [{"labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.4, 0.4]])}] * 2

    def losses(coef: float) -> dict[str, float]:
        torch.manual_seed(0)
        loss = DistillationLoss(teacher, bindings, build_criterion(spec.model, 4), coef=coef)
        loss.build(student, torch.rand(1, 3, 64, 64))
        torch.manual_seed(1)
        return {k: float(v.detach()) for k, v in loss(student, images, targets, nullcontext).items()}

    one, scaled = losses(1.0), losses(2.5)
    distill = [k for k in one if k.startswith("loss_distill_")]
    assert len(distill) == len(BINDINGS) and all(one[k] > 0 for k in distill)
    assert all(scaled[k] == pytest.approx(2.5 * one[k], rel=1e-5) for k in distill)
    assert all(scaled[k] == one[k] for k in one if k not in distill)


def test_tao_example_spec_and_binding_errors(trained, tmp_path, capsys) -> None:  # noqa: F811
    assert load_spec(_distill_spec(trained, tmp_path, bindings=[BINDINGS[0]]), [], action="distill").spec.distill
    bad = _distill_spec(
        trained,
        tmp_path,
        bindings=[{"student_module_name": "encodr", "teacher_module_name": "encoder", "criterion": "L1"}],
    )
    assert main(["distill", "-e", bad]) == 2
    err = capsys.readouterr().err
    assert "no output named ['encodr']" in err and "srcs" in err
    with pytest.raises(Exception, match="same feature list"):
        load_spec(_distill_spec(trained, tmp_path, bindings=[{**BINDINGS[0], "teacher_module_name": "dsrcs"}]), [])
