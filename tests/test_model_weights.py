"""Weights interop: our checkpoints, official release layouts, TAO checkpoints, Hugging Face directories and state
dicts, class-count changes, unsafe files, and the export back to Hugging Face."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from model_fixtures import paired_models

from rtdetr_tao.errors import CheckpointError
from rtdetr_tao.model.build import build_model
from rtdetr_tao.model.weights import load_weights, read_state_dict, save_hf

TINY = {
    "preset": "s",
    "hidden_dim": 64,
    "feat_channels": [64, 64, 64],
    "enc_hidden_dim": 64,
    "dim_feedforward": 128,
    "dec_dim_feedforward": 128,
    "num_queries": 30,
}


def _tiny(num_classes: int = 3, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(TINY, num_classes=num_classes).eval()


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sb = b.state_dict()
    return all(torch.equal(v, sb[k]) for k, v in a.state_dict().items())


def test_official_release_layout_prefers_ema(tmp_path: Path) -> None:
    src, ema = _tiny(seed=1), _tiny(seed=2)
    path = tmp_path / "rtdetrv2_r18vd.pth"
    state = {"model": src.state_dict(), "ema": {"module": ema.state_dict(), "updates": 10}, "last_epoch": 71}
    state["model"]["decoder.anchors"] = torch.zeros(1, 5, 4)  # official files carry these buffers
    torch.save(state, path)
    dst = _tiny(seed=3)
    report = load_weights(dst, path)
    assert report.complete and report.kind == "official" and not report.unexpected
    assert _same_weights(dst, ema)
    load_weights(dst, path, prefer_ema=False)
    assert _same_weights(dst, src)


def test_our_checkpoint_and_ddp_and_tao_prefixes(tmp_path: Path) -> None:
    src = _tiny(seed=1)
    ours = tmp_path / "model_epoch_000.pth"
    torch.save({"format": "rtdetr_tao", "format_version": 1, "model": src.state_dict(), "ema": None}, ours)
    dst = _tiny(seed=2)
    assert load_weights(dst, ours).kind == "rtdetr_tao" and _same_weights(dst, src)
    ddp = {f"module.{k}": v for k, v in src.state_dict().items()}
    tao = {"state_dict": {f"model.{k.replace('backbone.', 'backbone.0.', 1)}": v for k, v in src.state_dict().items()}}
    for state in (ddp, tao):
        dst = _tiny(seed=2)
        assert load_weights(dst, state).complete and _same_weights(dst, src)


def test_other_class_count_keeps_what_fits_and_reports_the_rest() -> None:
    src, dst = _tiny(num_classes=80, seed=1), _tiny(num_classes=3, seed=2)
    report = load_weights(dst, src.state_dict())
    skipped = {key for key, _ in report.skipped}
    assert skipped and all("score_head" in k or "denoising_class_embed" in k for k in skipped)
    assert (
        "decoder.enc_score_head.weight" in skipped
        and "(80, 64) vs model (3, 64)" in dict(report.skipped)["decoder.enc_score_head.weight"]
    )
    assert set(report.missing) == skipped
    assert "class heads kept at initial values" in report.summary()
    backbone_key = "backbone.conv1.conv1_1.conv.weight"
    assert torch.equal(dst.state_dict()[backbone_key], src.state_dict()[backbone_key])


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_unrelated_and_unsafe_files_are_clear_errors(tmp_path: Path) -> None:
    other = tmp_path / "other.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, other)
    with pytest.raises(CheckpointError, match="none of the 1 tensors"):
        load_weights(_tiny(), other)
    unsafe = tmp_path / "unsafe.pth"
    with open(unsafe, "wb") as handle:  # a pickle that would call a function on load
        pickle.dump({"model": ValueError("payload")}, handle)
    with pytest.raises(CheckpointError, match="weights_only"):
        load_weights(_tiny(), unsafe)
    with pytest.raises(CheckpointError, match="not found"):
        load_weights(_tiny(), tmp_path / "missing.pth")


def test_hugging_face_state_dict_directory_and_round_trip(tmp_path: Path) -> None:
    ours, hf = paired_models("s", num_classes=4, input_size=(160, 160))  # loads HF's state dict into ours
    hf.float().save_pretrained(tmp_path / "hf")
    fresh = build_model({"preset": "s"}, num_classes=4).eval()
    report = load_weights(fresh, tmp_path / "hf")
    assert report.kind == "Hugging Face" and report.complete and not report.unexpected
    images = torch.rand(1, 3, 160, 160)
    with torch.no_grad():
        torch.testing.assert_close(fresh(images)["pred_logits"], ours.float()(images)["pred_logits"])

    from transformers import RTDetrV2ForObjectDetection

    out = save_hf(fresh, tmp_path / "export", {"preset": "s"}, ["a", "b", "c", "d"])
    back = RTDetrV2ForObjectDetection.from_pretrained(out).eval()
    assert back.config.id2label[2] == "c"
    # float64: HF computes its anchors in the input dtype, ours in float32 like the reference (~1e-7 apart)
    with torch.no_grad():
        theirs, mine = back.double()(pixel_values=images.double()).logits, fresh.double()(images.double())
    torch.testing.assert_close(theirs, mine["pred_logits"], atol=1e-5, rtol=0)
    state, kind = read_state_dict(out / "model.safetensors")
    assert kind == "Hugging Face" and "decoder.dec_score_head.2.weight" in state


def test_backbone_weights(tmp_path: Path) -> None:
    src = _tiny(seed=1)
    path = tmp_path / "presnet18.pth"
    torch.save(src.backbone.state_dict(), path)
    model = build_model(TINY | {"pretrained_backbone_path": str(path)}, num_classes=3)
    assert _same_weights(model.backbone, src.backbone)
