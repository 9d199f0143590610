"""RT-DETRv2 model: numerical parity with Hugging Face transformers (an independent implementation), the paper's
sizes, sampling methods, training outputs, inference optimisation and post-processing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from model_fixtures import paired_models

from rtdetr_tao.config.model import ModelSpec
from rtdetr_tao.eval.postprocess import postprocess
from rtdetr_tao.model.build import build_model, build_postprocessor
from rtdetr_tao.model.decoder import deformable_sampling
from rtdetr_tao.model.optimize import optimize_for_inference

TOL = 1e-9  # float64: the two implementations agree to rounding


def _compare(preset: str, size: tuple[int, int], eval_size: tuple[int, int] | None, **overrides) -> None:
    ours, hf = paired_models(preset, num_classes=7, eval_size=eval_size, input_size=size, **overrides)
    images = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():
        mine, theirs = ours(images), hf(pixel_values=images)
    assert set(mine) == {"pred_logits", "pred_boxes"}
    torch.testing.assert_close(mine["pred_logits"], theirs.logits, atol=TOL, rtol=0)
    torch.testing.assert_close(mine["pred_boxes"], theirs.pred_boxes, atol=TOL, rtol=0)


# Square inputs: for H != W the official reference (which we follow, for its checkpoints) lays out the AIFI
# position embedding differently from HF's re-implementation.
@pytest.mark.parametrize("preset", ["s", "l"])
def test_matches_hugging_face(preset: str) -> None:
    _compare(preset, (192, 192), eval_size=None)


def test_matches_hugging_face_with_precomputed_eval_size() -> None:
    _compare("s", (160, 160), eval_size=(160, 160))


def test_discrete_sampling_matches_hugging_face() -> None:
    _compare("s", (160, 160), eval_size=None, cross_attn_method="discrete")


@pytest.mark.parametrize("preset", ["m", "m_star", "x"])
def test_matches_hugging_face_other_sizes(preset: str) -> None:
    _compare(preset, (160, 160), eval_size=None)


@pytest.mark.parametrize(("preset", "millions"), [("s", 20), ("m", 31), ("m_star", 36), ("l", 42), ("x", 76)])
def test_parameter_counts_match_the_paper(preset: str, millions: int) -> None:
    model = build_model({"preset": preset}, num_classes=80)
    assert abs(sum(p.numel() for p in model.parameters()) / 1e6 - millions) < 1.0


def test_presets_follow_the_reference_configs() -> None:
    m_star = ModelSpec.model_validate({"preset": "m_star"})
    assert (m_star.backbone, m_star.expansion, m_star.dec_layers, m_star.eval_idx) == ("resnet_50", 0.5, 6, 2)
    x = ModelSpec.model_validate({"preset": "x"})
    assert (x.encoder_width, x.dim_feedforward, x.backbone) == (384, 2048, "resnet_101")
    # spec keys win over the preset
    assert ModelSpec.model_validate({"preset": "s", "dec_layers": 5}).dec_layers == 5


def _tiny(**overrides) -> torch.nn.Module:
    spec = {"preset": "s", "hidden_dim": 64, "feat_channels": [64, 64, 64], "enc_hidden_dim": 64}
    spec |= {"dim_feedforward": 128, "dec_dim_feedforward": 128, "num_queries": 30, "dn_number": 10}
    return build_model(spec | overrides, num_classes=3)


def _targets() -> list[dict[str, torch.Tensor]]:
    return [
        {"labels": torch.tensor([0, 2]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.3], [0.3, 0.6, 0.1, 0.1]])},
        {"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4)},
    ]


def test_training_outputs_have_the_reference_layout() -> None:
    torch.manual_seed(0)
    model = _tiny().train()
    out = model(torch.rand(2, 3, 96, 96), _targets())
    assert out["pred_logits"].shape == (2, 30, 3) and out["pred_boxes"].shape == (2, 30, 4)
    assert len(out["aux_outputs"]) == 2 and len(out["enc_aux_outputs"]) == 1
    assert len(out["dn_aux_outputs"]) == 3
    meta = out["dn_meta"]
    n_dn = meta["dn_num_split"][0]
    assert out["dn_aux_outputs"][0]["pred_logits"].shape == (2, n_dn, 3)
    assert meta["dn_num_split"][1] == 30
    # two boxes, dn_number 10 → 5 groups of positive + negative queries; the positives of image 0 are listed
    assert meta["dn_num_group"] == 5 and len(meta["dn_positive_idx"][0]) == 2 * 5
    assert len(meta["dn_positive_idx"][1]) == 0
    boxes = out["pred_boxes"]
    assert bool((boxes >= 0).all() and (boxes <= 1).all())


def test_discrete_sampling_sends_no_gradient_to_sampling_offsets() -> None:
    torch.manual_seed(0)
    for method, expect_grad in [("default", True), ("discrete", False)]:
        model = _tiny(cross_attn_method=method, dn_number=0).train()
        out = model(torch.rand(1, 3, 64, 64), _targets()[:1])
        out["pred_logits"].sum().add(out["pred_boxes"].sum()).backward()
        grad = model.decoder.decoder.layers[0].cross_attn.sampling_offsets.weight.grad
        assert (grad is not None and grad.abs().sum() > 0) == expect_grad, method


def test_per_level_sampling_points() -> None:
    """[3, 6, 3] points: the sum over levels equals sampling each level on its own with its own points."""
    gen = torch.Generator().manual_seed(0)
    shapes, points, heads, c, q = [(8, 8), (4, 4), (2, 2)], [3, 6, 3], 2, 4, 5
    value = torch.rand(1, sum(h * w for h, w in shapes), heads, c, generator=gen)
    locations = torch.rand(1, q, heads, sum(points), 2, generator=gen)
    weights = torch.rand(1, q, heads, sum(points), generator=gen)
    full = deformable_sampling(value, shapes, locations, weights, points)
    starts, offset, parts = np.cumsum([0] + [h * w for h, w in shapes]), np.cumsum([0, *points]), []
    for level, (shape, p) in enumerate(zip(shapes, points, strict=True)):
        v = value[:, starts[level] : starts[level + 1]]
        sl = slice(offset[level], offset[level + 1])
        parts.append(deformable_sampling(v, [shape], locations[..., sl, :], weights[..., sl], [p]))
    torch.testing.assert_close(full, sum(parts))
    model = _tiny(num_points=[3, 6, 3]).eval()
    assert model.decoder.decoder.layers[0].cross_attn.sampling_offsets.out_features == 8 * 12 * 2
    assert model(torch.rand(1, 3, 64, 64))["pred_logits"].shape == (1, 30, 3)


def test_eval_idx_selects_the_decoder_layer() -> None:
    torch.manual_seed(0)
    model = _tiny(dec_layers=4, eval_idx=1).eval()
    images = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        early = model(images)["pred_logits"]
        model.decoder.decoder.eval_idx = 3
        last = model(images)["pred_logits"]
    assert not torch.allclose(early, last)


def test_optimize_for_inference_keeps_outputs() -> None:
    torch.manual_seed(0)
    model = _tiny().eval()
    for module in model.modules():  # non-trivial BatchNorm statistics
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    fast = optimize_for_inference(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
    images = torch.rand(2, 3, 96, 96)
    with torch.no_grad():
        a, b = model(images), fast(images)
    torch.testing.assert_close(a["pred_logits"], b["pred_logits"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(a["pred_boxes"], b["pred_boxes"], atol=1e-5, rtol=1e-4)


def test_torch_postprocessor_equals_numpy_postprocess() -> None:
    gen = torch.Generator().manual_seed(0)
    logits, boxes = torch.randn(2, 30, 3, generator=gen), torch.rand(2, 30, 4, generator=gen) * 0.5 + 0.25
    sizes = torch.tensor([[640, 480], [100, 200]])
    torch_out = build_postprocessor({"num_select": 10})({"pred_logits": logits, "pred_boxes": boxes}, sizes)
    numpy_out = postprocess(logits.numpy(), boxes.numpy(), [(640, 480), (100, 200)], [1, 2], num_select=10)
    for t, n in zip(torch_out, numpy_out, strict=True):
        np.testing.assert_array_equal(t["labels"].numpy(), n.labels)
        np.testing.assert_allclose(t["boxes"].numpy(), n.boxes, rtol=1e-6)
        np.testing.assert_allclose(t["scores"].numpy(), n.scores, rtol=1e-6)
