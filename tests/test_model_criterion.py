"""Matcher and criterion against Hugging Face's independent RT-DETR loss, and on real model outputs."""

from __future__ import annotations

import pytest
import torch

from rtdetr_tao.model.build import build_criterion, build_model

L, Q, C = 3, 20, 5


def _random_outputs(gen: torch.Generator, bs: int = 3, dn_groups: int = 2, sizes=(3, 0, 2)) -> dict:
    def head(n: int) -> dict:
        logits = torch.randn(bs, n, C, generator=gen, dtype=torch.float64).requires_grad_()
        centers = torch.rand(bs, n, 2, generator=gen, dtype=torch.float64) * 0.6 + 0.2
        wh = torch.rand(bs, n, 2, generator=gen, dtype=torch.float64) * 0.3 + 0.05
        return {"pred_logits": logits, "pred_boxes": torch.cat([centers, wh], -1).requires_grad_()}

    n_dn = 2 * max(sizes) * dn_groups
    positive = tuple(torch.cat([torch.arange(n) + g * 2 * max(sizes) for g in range(dn_groups)]).long() for n in sizes)
    return {
        **head(Q),
        "aux_outputs": [head(Q) for _ in range(L - 1)],
        "enc_aux_outputs": [head(Q)],
        "enc_meta": {"class_agnostic": False},
        "dn_aux_outputs": [head(n_dn) for _ in range(L)],
        "dn_meta": {"dn_positive_idx": positive, "dn_num_group": dn_groups, "dn_num_split": [n_dn, Q]},
    }


def _targets(gen: torch.Generator, sizes=(3, 0, 2)) -> list[dict]:
    out = []
    for n in sizes:
        centers = torch.rand(n, 2, generator=gen, dtype=torch.float64) * 0.6 + 0.2
        wh = torch.rand(n, 2, generator=gen, dtype=torch.float64) * 0.3 + 0.05
        out.append({"labels": torch.randint(0, C, (n,), generator=gen), "boxes": torch.cat([centers, wh], -1)})
    return out


def _hf_loss(outputs: dict, targets: list[dict]) -> dict:
    from transformers import RTDetrV2Config
    from transformers.loss.loss_rt_detr import RTDetrLoss

    config = RTDetrV2Config(num_labels=C)  # defaults: costs 2/5/2, weights 1/5/2, alpha 0.75, gamma 2
    hf_outputs = {
        "logits": outputs["pred_logits"],
        "pred_boxes": outputs["pred_boxes"],
        "auxiliary_outputs": [
            {"logits": a["pred_logits"], "pred_boxes": a["pred_boxes"]}
            for a in outputs["aux_outputs"] + outputs["enc_aux_outputs"]
        ],
        "dn_auxiliary_outputs": [
            {"logits": a["pred_logits"], "pred_boxes": a["pred_boxes"]} for a in outputs["dn_aux_outputs"]
        ],
        "denoising_meta_values": outputs["dn_meta"],
    }
    hf_targets = [{"class_labels": t["labels"], "boxes": t["boxes"]} for t in targets]
    return RTDetrLoss(config)(hf_outputs, hf_targets)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_losses_equal_hugging_face(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    outputs, targets = _random_outputs(gen), _targets(gen)
    ours = build_criterion({"preset": "s"}, num_classes=C)(outputs, targets)
    theirs = _hf_loss(outputs, targets)
    # HF counts the encoder proposals as one more auxiliary layer; the reference (and we) name them _enc_0
    renamed = {k.replace(f"_aux_{L - 1}", "_enc_0"): v for k, v in theirs.items()}
    assert set(ours) == set(renamed) and len(ours) == 3 * (1 + (L - 1) + 1 + L)
    for key, value in ours.items():
        torch.testing.assert_close(value, renamed[key], rtol=1e-10, atol=1e-12, msg=key)


def test_matcher_equals_hugging_face_and_handles_empty_targets() -> None:
    from transformers import RTDetrV2Config
    from transformers.loss.loss_rt_detr import RTDetrHungarianMatcher

    gen = torch.Generator().manual_seed(3)
    outputs, targets = _random_outputs(gen), _targets(gen)
    criterion = build_criterion({"preset": "s"}, num_classes=C)
    ours = criterion.matcher(outputs, targets)
    theirs = RTDetrHungarianMatcher(RTDetrV2Config(num_labels=C))(
        {"logits": outputs["pred_logits"], "pred_boxes": outputs["pred_boxes"]},
        [{"class_labels": t["labels"], "boxes": t["boxes"]} for t in targets],
    )
    for (qi, ti), (qh, th) in zip(ours, theirs, strict=True):
        assert torch.equal(qi, qh) and torch.equal(ti, th)
    assert len(ours[1][0]) == 0
    empty = [{"labels": torch.zeros(0, dtype=torch.long), "boxes": torch.zeros(0, 4, dtype=torch.float64)}] * 3
    assert all(len(q) == 0 for q, _ in criterion.matcher(outputs, empty))
    losses = criterion({k: v for k, v in outputs.items() if not k.startswith("dn_")}, empty)
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_bbox"] == 0 and losses["loss_vfl"] > 0  # all queries are negatives


def test_real_model_outputs_train_end_to_end() -> None:
    torch.manual_seed(0)
    spec = {"preset": "s", "hidden_dim": 64, "feat_channels": [64, 64, 64], "enc_hidden_dim": 64}
    spec |= {"dim_feedforward": 128, "dec_dim_feedforward": 128, "num_queries": 30, "dn_number": 10}
    model, criterion = build_model(spec, num_classes=3).train(), build_criterion(spec, num_classes=3)
    targets = [
        {"labels": torch.tensor([0, 2]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.3], [0.3, 0.6, 0.1, 0.1]])},
        {"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4)},
    ]
    losses = criterion(model(torch.rand(2, 3, 96, 96), targets), targets)
    assert any(k.endswith("_dn_0") for k in losses) and any(k.endswith("_enc_0") for k in losses)
    total = sum(losses.values())
    total.backward()
    assert torch.isfinite(total)
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert sum(g is not None and bool(g.abs().sum() > 0) for g in grads) > 0.9 * len(grads)


def test_num_boxes_normalises_box_losses() -> None:
    gen = torch.Generator().manual_seed(4)
    outputs, targets = _random_outputs(gen, sizes=(2, 2, 2)), _targets(gen, sizes=(2, 2, 2))
    criterion = build_criterion({"preset": "s", "bbox_loss_coef": 1.0}, num_classes=C)
    indices = criterion.matcher(outputs, targets)
    once = criterion.loss_boxes(outputs, targets, indices, num_boxes=6.0)["loss_bbox"]
    twice = criterion.loss_boxes(outputs, targets, indices, num_boxes=12.0)["loss_bbox"]
    torch.testing.assert_close(once, 2 * twice)
    assert criterion._num_boxes(targets, torch.device("cpu")) == 6.0
    assert criterion._num_boxes([{"labels": torch.zeros(0)}], torch.device("cpu")) == 1.0
