"""EfficientViT against MIT's code (mit-han-lab/efficientvit), without it: stage maps that
benchmarks/efficientvit_parity.py computed with MIT's ``efficientvit_backbone_{l0,b0}`` for our seeded weights, and a
checkpoint in MIT's layout (which TAO's vendored copy keeps) loaded through ``model.pretrained_backbone_path``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from model_fixtures import load_parity_script, weights_sum

from rtdetr_tao.model.weights import load_backbone_weights

pytest.importorskip("timm")


class _Holder(torch.nn.Module):
    def __init__(self, backbone: torch.nn.Module) -> None:
        super().__init__()
        self.backbone = backbone


@torch.no_grad()
@pytest.mark.parametrize("name", ["efficientvit_l0", "efficientvit_b0"])
def test_mit_layout_checkpoint_loads_and_equals_mits_code(tmp_path: Path, name: str) -> None:
    """MIT's classification checkpoint layout (``state_dict`` with ``backbone.input_stem.op_list...`` /
    ``backbone.stages.i.op_list...`` and ``head.op_list...``, efficientvit/models/efficientvit/cls.py) fills every
    tensor of our backbone; with MIT's attention numerics the stage maps equal MIT's in float64 (architecture: widths,
    depths, expand ratios, head dims); as built (timm's attention eps 1e-5 and float32 product) they stay close."""
    parity = load_parity_script("efficientvit_parity")
    record = torch.load(parity.FIXTURE, weights_only=True)[name]
    source = parity.seeded_backbone(name)
    torch.testing.assert_close(weights_sum(source), record["weights_sum"], rtol=0, atol=1e-9)  # same seeded weights
    state = {f"backbone.{k}": v.clone() for k, v in parity.mit_layout(source, record["mit_keys"]).items()}
    state["head.op_list.3.linear.weight"] = torch.zeros(1000, 8)
    path = tmp_path / f"{name}_r224.pt"
    torch.save({"state_dict": state}, path)
    for tensor in source.state_dict().values():  # the file must refill every tensor
        tensor.zero_()
    model = _Holder(source)
    report = load_backbone_weights(model, path)
    assert not report.missing and not report.skipped, report.summary()
    assert report.unexpected == ["head.op_list.3.linear.weight"]
    x = parity.fixture_input()
    for got, expected in zip(model.backbone(x), record["features"], strict=True):
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-3)
    for got, expected in zip(parity.mit_numerics_(model.backbone)(x), record["features"], strict=True):
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)
