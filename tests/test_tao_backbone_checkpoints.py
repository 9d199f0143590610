"""``model.pretrained_backbone_path`` with TAO's backbone checkpoints, built in the layout TAO's trainers save.

Layouts reproduced from NVIDIA/tao_pytorch_backend (commit 3a8a971):
- PyTorch Lightning checkpoints (``state_dict`` beside ``epoch`` / ``global_step`` / ``loops`` / ``callbacks`` /
  ``optimizer_states`` / ``lr_schedulers``) to which ``on_save_checkpoint`` adds ``tao_model``
  (nvidia_tao_pytorch/cv/classification_pyt/model/classifier_pl_model.py: ``"classification"``;
  nvidia_tao_pytorch/cv/rtdetr/model/pl_rtdetr_model.py: ``"rtdetr"``).
- Classification: the Lightning module holds the backbone_v2 classifier at ``self.model`` (keys ``model.`` + timm's
  ResNet names, nvidia_tao_pytorch/cv/backbone_v2/resnet.py subclasses timm's ResNet; ``resnet_50d`` is timm's deep
  stem + average-pool shortcuts).
- RT-DETR: ``self.model`` is ``RTDETRModel`` whose ``self.model`` is ``RTDETR`` (keys ``model.model.backbone.`` /
  ``model.model.encoder.`` / ``model.model.decoder.``; nvidia_tao_pytorch/cv/rtdetr/model/build_nn_model.py). Its
  ``resnet_*`` are timm ResNets with the plain 7x7 stem (cv/rtdetr/model/backbone/resnet.py); its ``convnext_*``
  keep facebookresearch/ConvNeXt's layout plus ``conv_512/1024/2048`` projections (cv/rtdetr/model/backbone/
  convnext.py, cv/backbone_v2/convnext_v2.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from model_fixtures import perturb_
from test_train import TINY_MODEL

from rtdetr_tao.errors import CheckpointError
from rtdetr_tao.model.backbone import PResNet
from rtdetr_tao.model.build import build_model
from rtdetr_tao.model.weights import load_backbone_weights

timm = pytest.importorskip("timm")


def lightning_checkpoint(state_dict: dict[str, torch.Tensor], tao_model: str) -> dict:
    """What ``pytorch_lightning.Trainer.save_checkpoint`` writes for a TAO module without EMA (TAO's EMA callback
    writes the averaged weights as a second checkpoint of this same layout, ``<name>-EMA.ckpt``)."""
    return {
        "epoch": 9,
        "global_step": 1250,
        "pytorch-lightning_version": "2.4.0",
        "state_dict": state_dict,
        "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"total": {"ready": 10, "completed": 9}}}},
        "callbacks": {"ModelCheckpoint{'monitor': None, 'mode': 'min'}": {"best_model_path": "", "dirpath": "/r"}},
        "optimizer_states": [{"state": {}, "param_groups": [{"lr": 1e-3, "weight_decay": 0.05, "params": [0, 1]}]}],
        "lr_schedulers": [{"base_lrs": [1e-3], "last_epoch": 9, "_step_count": 10}],
        "tao_model": tao_model,
    }


class _Holder(torch.nn.Module):
    """The part of a detector ``load_backbone_weights`` needs: ``.backbone``."""

    def __init__(self, backbone: torch.nn.Module) -> None:
        super().__init__()
        self.backbone = backbone


def _timm_resnet(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return perturb_(timm.create_model(name).double().eval(), seed=1)


@torch.no_grad()
def test_tao_classification_resnet_50d_checkpoint_equals_timm(tmp_path: Path) -> None:
    """A TAO classification_pyt ``resnet_50d`` checkpoint: every PResNet-50-vd tensor loads (ResNet-D is PResNet's
    architecture), the stage maps equal timm's in float64, and only the classifier head is reported."""
    reference = _timm_resnet("resnet50d")
    path = tmp_path / "classifier_model_latest.pth"
    torch.save(
        lightning_checkpoint({f"model.{k}": v for k, v in reference.state_dict().items()}, "classification"), path
    )
    model = _Holder(PResNet(50, [0, 1, 2, 3], freeze_norm=False).double().eval())
    report = load_backbone_weights(model, path)
    assert report.kind == "TAO classification" and report.complete, report.summary()
    assert sorted(report.unexpected) == ["backbone.fc.bias", "backbone.fc.weight"]
    x = torch.randn(1, 3, 64, 96, dtype=torch.float64)
    expected = reference.forward_intermediates(x, indices=[1, 2, 3, 4], intermediates_only=True)
    for got, want in zip(model.backbone(x), expected, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-10)


@torch.no_grad()
def test_tao_rtdetr_checkpoint_loads_its_resnet_and_reports_the_stem_and_the_rest(tmp_path: Path) -> None:
    """A TAO RT-DETR checkpoint (``model.model.backbone.`` + a plain-stem timm ResNet-50): the residual stages load
    into PResNet-50-vd, the 7x7 stem (no counterpart in the deep stem) and the encoder / decoder are reported."""
    tao_backbone = timm.create_model("resnet50", num_classes=0)
    tao_rest = build_model(TINY_MODEL, num_classes=3)
    state = {f"model.model.backbone.{k}": v for k, v in tao_backbone.state_dict().items()}
    state |= {f"model.model.{k}": v for k, v in tao_rest.state_dict().items() if not k.startswith("backbone.")}
    path = tmp_path / "model_epoch_009.pth"
    torch.save(lightning_checkpoint(state, "rtdetr"), path)
    model = _Holder(PResNet(50, [1, 2, 3], freeze_norm=False))
    report = load_backbone_weights(model, path)
    assert report.kind == "TAO rtdetr"
    assert {k.split(".")[1] for k in report.missing} == {"conv1"}  # the stem only
    assert {"backbone.conv1.weight", "backbone.bn1.weight", "backbone.bn1.running_var"} <= set(report.unexpected)
    assert any(k.startswith("encoder.") for k in report.unexpected) and any(
        k.startswith("decoder.") for k in report.unexpected
    )
    own = model.backbone.state_dict()
    theirs = tao_backbone.state_dict()
    for ours_key, tao_key in [
        ("res_layers.0.blocks.0.branch2a.conv.weight", "layer1.0.conv1.weight"),
        ("res_layers.2.blocks.5.branch2c.norm.running_mean", "layer3.5.bn3.running_mean"),
        ("res_layers.0.blocks.0.short.conv.weight", "layer1.0.downsample.0.weight"),  # stride 1: no pool
        ("res_layers.3.blocks.0.short.conv.conv.weight", "layer4.0.downsample.0.weight"),
        ("res_layers.3.blocks.0.short.conv.norm.bias", "layer4.0.downsample.1.bias"),
    ]:
        assert torch.equal(own[ours_key], theirs[tao_key]), ours_key


def _facebook_convnext_names(timm_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm ConvNeXt names → facebookresearch/ConvNeXt's (TAO's ``downsample_layers`` / ``stages.i.j.dwconv`` /
    ``pwconv1`` / ``gamma`` / final ``norm``), the layout of TAO's ConvNeXt backbones."""
    out = {}
    for key, value in timm_state.items():
        parts = key.split(".")
        if parts[0] == "stem":
            key = "downsample_layers.0." + ".".join(parts[1:])
        elif parts[0] == "stages" and parts[2] == "downsample":
            key = f"downsample_layers.{parts[1]}." + ".".join(parts[3:])
        elif parts[0] == "stages":
            key = f"stages.{parts[1]}.{parts[3]}." + ".".join(parts[4:])
            key = key.replace("conv_dw", "dwconv").replace("mlp.fc", "pwconv")
        elif key.startswith("head.norm."):
            key = key.removeprefix("head.")
        elif key.startswith("head.fc."):
            key = key.replace("head.fc.", "head.")
        out[key] = value
    return out


@torch.no_grad()
def test_tao_rtdetr_convnext_layout_loads_through_the_spec_key(tmp_path: Path) -> None:
    """TAO's ConvNeXt layout (facebookresearch names, ``conv_512`` projections of its RT-DETR backbone) through
    ``model.pretrained_backbone_path``: timm's own filter renames it; the stage maps equal timm's; the projections and
    the classifier are reported, not loaded."""
    torch.manual_seed(0)
    reference = perturb_(timm.create_model("convnext_atto").eval(), seed=1)
    state = {f"model.model.backbone.{k}": v for k, v in _facebook_convnext_names(reference.state_dict()).items()}
    state["model.model.backbone.conv_512.weight"] = torch.zeros(512, 80, 3, 3)
    path = tmp_path / "rtdetr_convnext.pth"
    torch.save(lightning_checkpoint(state, "rtdetr"), path)
    spec = {**TINY_MODEL, "preset": None, "backbone": "timm:convnext_atto", "pretrained_backbone_path": str(path)}
    model = build_model(spec, num_classes=3).eval()
    report = load_backbone_weights(model, path)
    assert not [k for k in report.missing if k.startswith("backbone.")], report.summary()
    assert {f"backbone.{k}" for k in ("conv_512.weight", "head.fc.weight", "head.norm.weight")} <= set(
        report.unexpected
    )
    x = torch.randn(1, 3, 64, 64)
    expected = reference.forward_intermediates(x, indices=[1, 2, 3], intermediates_only=True)
    for got, want in zip(model.backbone(x), expected, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def test_other_wrappings_and_an_encrypted_checkpoint(tmp_path: Path) -> None:
    """timm's train.py checkpoint (EMA copy preferred), DDP + torch.compile prefixes, MMLab ``ema_`` copies; an
    encrypted TAO checkpoint is a clear error."""
    src, ema = PResNet(18, freeze_norm=False), PResNet(18, freeze_norm=False)
    for module, value in ((src, 1.0), (ema, 2.0)):
        for tensor in module.state_dict().values():
            tensor.fill_(value)
    timm_train = {"epoch": 3, "arch": "presnet18", "state_dict": src.state_dict(), "state_dict_ema": ema.state_dict()}
    wrapped = {f"module._orig_mod.backbone.{k}": v for k, v in src.state_dict().items()}
    wrapped["ema_backbone_conv1_conv1_1_conv_weight"] = torch.zeros(1)
    for name, checkpoint, expected in (("timm", timm_train, 2.0), ("ddp", {"state_dict": wrapped}, 1.0)):
        path = tmp_path / f"{name}.pth"
        torch.save(checkpoint, path)
        model = _Holder(PResNet(18, freeze_norm=False))
        report = load_backbone_weights(model, path)
        assert report.complete and report.unexpected in ([], ["ema_backbone_conv1_conv1_1_conv_weight"]), name
        assert model.backbone.conv1.conv1_1.conv.weight.eq(expected).all(), name
    encrypted = tmp_path / "encrypted.pth"
    torch.save({"state_dict_encrypted": True, "state_dict": b"\x00", "tao_model": "rtdetr"}, encrypted)
    with pytest.raises(CheckpointError, match="encrypted TAO checkpoint"):
        load_backbone_weights(_Holder(PResNet(18)), encrypted)
