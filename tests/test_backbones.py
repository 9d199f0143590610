"""The backbone zoo: every ``model.backbone`` value builds with the stage channels the encoder expects; HGNetv2 equals
the official RT-DETRv2 code, FAN equals TAO's; timm backbones equal timm with timm's own checkpoints; one backbone of
each family trains, evaluates and exports to ONNX through the CLI."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from model_fixtures import load_parity_script, perturb_, weights_sum
from test_train import TINY_MODEL

from rtdetr_tao.cli import main
from rtdetr_tao.config.backbones import BACKBONES
from rtdetr_tao.config.experiment import ExperimentSpec
from rtdetr_tao.config.model import ModelSpec
from rtdetr_tao.data.synthetic import write_split
from rtdetr_tao.errors import SpecError
from rtdetr_tao.model.build import build_backbone, build_model
from rtdetr_tao.model.fan import ARCHS as FAN_ARCHS
from rtdetr_tao.model.fan import FAN, TAO_UNUSED_KEYS
from rtdetr_tao.model.weights import load_backbone_weights

timm = pytest.importorskip("timm")


@torch.no_grad()
def test_hgnetv2_equals_the_official_code() -> None:
    """Feature maps of the official HGNetv2-L (fixture written by benchmarks/hgnetv2_parity.py from the official
    code) for our seeded weights, loaded there by name with strict=True; float64, all four stages."""
    parity = load_parity_script("hgnetv2_parity")
    fixture = torch.load(parity.FIXTURE, weights_only=True)
    ours = parity.seeded_backbone("L")
    torch.testing.assert_close(weights_sum(ours), fixture["weights_sum"], rtol=0, atol=1e-9)  # same seeded weights
    for got, expected in zip(ours(parity.fixture_input()), fixture["features"], strict=True):
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize(("size", "params"), [("l", 32_925_036), ("x", 67_374_188), ("h", 125_584_348)])
def test_hgnetv2_presets_have_the_official_parameter_counts(size: str, params: int) -> None:
    """Counts of the official rtdetrv2_hgnetv2_{size}_6x_coco.yml models (80 classes), measured with the official
    code by benchmarks/hgnetv2_parity.py's model construction."""
    with torch.device("meta"):
        model = build_model({"preset": f"hgnetv2_{size}"}, num_classes=80)
    assert sum(p.numel() for p in model.parameters()) == params


def test_hgnetv2_presets_follow_the_official_configs() -> None:
    x = ModelSpec.model_validate({"preset": "hgnetv2_x"})
    assert (x.backbone, x.encoder_width, x.dim_feedforward, x.feat_channels) == ("hgnetv2_x", 384, 2048, [384] * 3)
    h = ModelSpec.model_validate({"preset": "hgnetv2_h"})
    assert (h.encoder_width, h.enc_layers, h.feat_channels, h.dec_layers) == (512, 2, [512] * 3, 6)
    lrs = {s: ExperimentSpec.model_validate({"model": {"preset": f"hgnetv2_{s}"}}).lr_backbone for s in "lxh"}
    assert lrs == {"l": 5e-6, "x": 1e-6, "h": 5e-6}
    assert ModelSpec.model_validate({"preset": "hgnetv2_l"}).freeze_at == 0


@torch.no_grad()
def test_fan_equals_taos_code() -> None:
    """Feature maps of TAO's RT-DETR fan_tiny (fixture written by benchmarks/fan_parity.py from TAO's code) for our
    seeded weights, loaded there by name; float64, all four stages. Our state-dict names and shapes are TAO's, less
    the class-token path that no output depends on."""
    parity = load_parity_script("fan_parity")
    fixture = torch.load(parity.FIXTURE, weights_only=True)
    ours = parity.seeded_backbone("tiny")
    torch.testing.assert_close(weights_sum(ours), fixture["weights_sum"], rtol=0, atol=1e-9)
    used = {k: v for k, v in fixture["tao_shapes"].items() if not TAO_UNUSED_KEYS.match(k)}
    assert {k: list(v.shape) for k, v in ours.state_dict().items()} == used
    assert len(used) < len(fixture["tao_shapes"])
    for got, expected in zip(ours(parity.fixture_input()), fixture["features"], strict=True):
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    ("size", "ours", "tao"),
    [
        ("tiny", 7_715_648, 8_604_800),
        ("small", 24_843_216, 28_390_992),
        ("base", 48_299_392, 53_126_592),
        ("large", 74_155_292, 79_695_932),
    ],
)
def test_fan_parameter_counts_are_taos_less_the_class_token_path(size: str, ours: int, tao: int) -> None:
    """All four stages; TAO's counts measured with TAO's code by benchmarks/fan_parity.py. The difference is the
    class token, the final classifier norm and, in each of the two class-attention blocks, q/k/v/proj, the MLP and
    gamma2: 24 d^2 + 23 d for width d."""
    with torch.device("meta"):
        backbone = FAN(size, return_idx=[0, 1, 2, 3])
    assert sum(p.numel() for p in backbone.parameters()) == ours
    d = FAN_ARCHS[size].embed_dim
    assert tao - ours == 24 * d * d + 23 * d


@pytest.mark.parametrize("prefix", ["", "model.backbone."])
def test_taos_fan_backbone_weights_load(tmp_path, prefix: str) -> None:
    """TAO's FAN backbone layout (its names and shapes from the fixture, bare or under ``model.backbone.``, the two
    layouts TAO's RT-DETR reads as pretrained_backbone_path) fills every backbone tensor through
    model.pretrained_backbone_path; only the class-token path is reported as not in the model."""
    parity = load_parity_script("fan_parity")
    tao_shapes = torch.load(parity.FIXTURE, weights_only=True)["tao_shapes"]
    source = parity.seeded_backbone("tiny").float().state_dict()
    state = {k: source[k] if k in source else torch.randn(shape) for k, shape in tao_shapes.items()}
    path = tmp_path / "fan_tiny_tao.pth"
    torch.save({prefix + k: v for k, v in state.items()}, path)
    stages = {"return_interm_indices": [0, 1, 2, 3], "feat_strides": [4, 8, 16, 32], "feat_channels": [32] * 4}
    spec = {
        **TINY_MODEL,
        **stages,
        "preset": None,
        "backbone": "fan_tiny",
        "freeze_norm": False,
        "num_feature_levels": 4,
    }
    model = build_model(spec, num_classes=3)
    report = load_backbone_weights(model, path)
    assert not report.missing and not report.skipped, report.summary()
    assert sorted(report.unexpected) == sorted(f"backbone.{k}" for k in tao_shapes if TAO_UNUSED_KEYS.match(k))
    for key, value in source.items():
        torch.testing.assert_close(model.backbone.state_dict()[key], value, rtol=0, atol=0)


@pytest.mark.parametrize("name", list(BACKBONES))
def test_every_backbone_has_the_declared_stage_channels(name: str) -> None:
    with torch.device("meta"):
        backbone = build_backbone(
            {
                "backbone": name,
                "return_interm_indices": [0, 1, 2, 3],
                "feat_strides": [4, 8, 16, 32],
                "feat_channels": [256] * 4,
                "num_feature_levels": 4,
            }
        )
    assert backbone.out_channels == list(BACKBONES[name].channels)
    assert backbone.out_strides == [4, 8, 16, 32]


@torch.no_grad()
@pytest.mark.parametrize(
    ("backbone", "timm_name", "timm_args", "stages"),
    [
        ("convnext_tiny", "convnext_tiny", {}, [1, 2, 3]),
        ("efficientvit_b0", "efficientvit_b0", {}, [1, 2, 3]),
        ("efficientvit_l0", "efficientvit_l1", {"depths": (1, 1, 1, 4, 4)}, [0, 2, 3]),
        ("timm:resnet18", "resnet18", {}, [1, 2, 3]),
        ("timm:mobilenetv3_small_050", "mobilenetv3_small_050", {}, [1, 2, 3]),  # BatchNormAct2d, frozen
    ],
)
def test_timm_backbones_load_timm_checkpoints_and_equal_timm(
    tmp_path, backbone: str, timm_name: str, timm_args: dict, stages: list[int]
) -> None:
    """A plain timm classifier's state dict (timm's checkpoint layout) loads through model.pretrained_backbone_path
    and our stage outputs equal timm's own ``forward_intermediates`` in float64."""
    torch.manual_seed(0)
    reference = perturb_(timm.create_model(timm_name, **timm_args).double().eval(), seed=1)
    checkpoint = tmp_path / "timm.pth"
    torch.save(reference.state_dict(), checkpoint)
    strides = [4 * 2**i for i in stages]
    spec = {
        **TINY_MODEL,
        "preset": None,
        "backbone": backbone,
        "return_interm_indices": stages,
        "feat_strides": strides,
        "num_feature_levels": 3,
    }
    model = build_model(spec, num_classes=3).double().eval()
    report = load_backbone_weights(model, checkpoint)
    assert not [k for k in report.missing if k.startswith("backbone.")], report.summary()
    assert all(not k.startswith("backbone.") for k, _ in report.skipped), report.summary()
    x = torch.randn(1, 3, 64, 96, dtype=torch.float64)
    levels = [i for i, info in enumerate(reference.feature_info) if info["reduction"] in strides]
    expected = reference.forward_intermediates(x, indices=levels, intermediates_only=True)
    for got, want in zip(model.backbone(x), expected, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-10)


def test_unknown_backbones_are_one_line_errors(tmp_path, capsys) -> None:
    for name in ("fan_medium", "resnet_19"):
        spec = tmp_path / f"{name}.yaml"
        spec.write_text(yaml.safe_dump({"model": {"backbone": name}}))
        assert main(["train", "-e", str(spec), "--dry-run"]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and name in err and "convnext_tiny" in err and "timm:" in err
    with pytest.raises(SpecError, match="none at"):  # a ViT has no stride-8 level
        build_model({**TINY_MODEL, "preset": None, "backbone": "timm:vit_tiny_patch16_224"}, 3)
    with pytest.raises(SpecError, match="timm has no model"):
        build_model({**TINY_MODEL, "preset": None, "backbone": "timm:no_such_net"}, 3)


def test_timm_freeze_at_freezes_the_stem_and_early_stages() -> None:
    spec = {**TINY_MODEL, "preset": None, "backbone": "convnext_tiny", "freeze_at": 1}
    backbone = build_model(spec, num_classes=3).backbone
    frozen = {n.split(".")[1] for n, p in backbone.named_parameters() if not p.requires_grad}
    trainable = {n.split(".")[1] for n, p in backbone.named_parameters() if p.requires_grad}
    assert frozen == {"stem_0", "stem_1", "stages_0"} and trainable == {"stages_1", "stages_2", "stages_3"}


def test_fan_freeze_at_freezes_the_stem_and_early_stages() -> None:
    """Stages 0 and 1 are the ConvNeXt stages; stage 2 the patch projection, position embedding and FAN blocks up to
    out_index (18 for large); stage 3 the remaining blocks, class-attention norms and the stride-2 conv; the output
    norms stay trainable."""
    from rtdetr_tao.model.backbone import FrozenBatchNorm2d

    with torch.device("meta"):
        two = FAN("large", return_idx=[1, 2, 3], freeze_at=2, freeze_norm=True)
        three = FAN("large", return_idx=[1, 2, 3], freeze_at=3)

    def frozen(model: FAN) -> list[bool]:
        return [not p.requires_grad for p in model.parameters()]

    def inside(model: FAN, prefixes: tuple[str, ...]) -> list[bool]:
        return [name.startswith(prefixes) for name, _ in model.named_parameters()]

    assert frozen(two) == inside(two, ("patch_embed.backbone.",))
    stage2 = ("patch_embed.", "pos_embed.", *(f"blocks.{i}." for i in range(19)))
    assert frozen(three) == inside(three, stage2)
    assert any(isinstance(m, FrozenBatchNorm2d) for m in two.modules())
    assert not any(isinstance(m, FrozenBatchNorm2d) for m in three.modules())


FAST_FAMILIES = ["hgnetv2_l", "efficientvit_b0", "fan_tiny", "timm:mobilenetv3_small_050"]
SLOW_FAMILIES = ["convnext_tiny", "efficientvit_l0", "hgnetv2_x", "timm:hgnetv2_b0"]


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("zoo")
    return {
        "train": write_split(root / "train", 8, size=(64, 64), seed=0),
        "val": write_split(root / "val", 4, size=(64, 64), seed=1),
    }


@pytest.mark.parametrize(
    "backbone", [*FAST_FAMILIES, *(pytest.param(b, marks=pytest.mark.slow) for b in SLOW_FAMILIES)]
)
def test_each_family_trains_evaluates_and_exports(tmp_path, shapes, backbone: str) -> None:
    """Two optimizer steps, COCO evaluation, ONNX export whose ONNX Runtime outputs match PyTorch (export's own
    check, recorded in status.json) — a TAO spec with only model.backbone changed."""
    source = lambda split: {"image_dir": str(split.image_dir), "json_file": str(split.json_file)}  # noqa: E731
    spec = {
        "results_dir": str(tmp_path / "results"),
        "model": {**TINY_MODEL, "preset": None, "backbone": backbone, "freeze_norm": False},
        "dataset": {
            "train_data_sources": [source(shapes["train"])],
            "val_data_sources": source(shapes["val"]),
            "test_data_sources": source(shapes["val"]),
            "num_classes": 4,
            "batch_size": 4,
            "workers": 0,
            "augmentation": {"train_spatial_size": [64, 64], "eval_spatial_size": [64, 64], "multi_scales": []},
        },
        "train": {"num_epochs": 1, "device": "cpu", "seed": 0, "optim": {"warmup_steps": 1}},
        "export": {"input_height": 64, "input_width": 64},
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert main(["train", "-e", str(path)]) == 0
    checkpoint = tmp_path / "results" / "train" / "model_epoch_000.pth"
    assert torch.load(checkpoint, weights_only=True)["global_step"] == 2
    assert main(["evaluate", "-e", str(path), f"evaluate.checkpoint={checkpoint}"]) == 0
    assert "AP" in json.loads((tmp_path / "results" / "evaluate" / "results.json").read_text())
    onnx_file = tmp_path / "model.onnx"
    assert main(["export", "-e", str(path), f"export.checkpoint={checkpoint}", f"export.onnx_file={onnx_file}"]) == 0
    status = (tmp_path / "results" / "export" / "status.json").read_text().splitlines()
    assert json.loads(status[-1])["kpi"]["onnx_max_abs_diff"] < 1e-3


@torch.no_grad()
@pytest.mark.parametrize("backbone", ["hgnetv2_l", "efficientvit_b0", "fan_tiny", "timm:mobilenetv3_small_050"])
def test_optimize_for_inference_keeps_each_familys_outputs(backbone: str) -> None:
    """Folding touches only conv → norm pairs it can prove adjacent: HGNetv2's are all folded, timm modules that
    merely have ``conv`` and ``norm`` / ``bn`` children (BatchNormAct2d: an activation inside) are left alone."""
    from rtdetr_tao.model.backbone import FrozenBatchNorm2d
    from rtdetr_tao.model.optimize import optimize_for_inference

    torch.manual_seed(0)
    model = perturb_(build_model({**TINY_MODEL, "preset": None, "backbone": backbone}, num_classes=3).eval())
    x = torch.rand(2, 3, 64, 64)
    fast = optimize_for_inference(model)
    expected, got = model(x), fast(x)
    for key in ("pred_logits", "pred_boxes"):
        torch.testing.assert_close(got[key], expected[key], rtol=1e-4, atol=1e-4)
    if backbone.startswith("hgnetv2"):
        assert not any(isinstance(m, torch.nn.BatchNorm2d | FrozenBatchNorm2d) for m in fast.backbone.modules())


def test_official_hgnetv2_imagenet_layout_loads_into_the_backbone(tmp_path) -> None:
    """The official PPHGNetV2_*_ssld_pretrained_from_paddle.pth files are bare HGNetv2 state dicts (the official
    module loads them with strict=True, whose names equal ours: benchmarks/hgnetv2_parity.py); such a file fills
    every backbone tensor through model.pretrained_backbone_path."""
    parity = load_parity_script("hgnetv2_parity")
    source = parity.seeded_backbone("L").float()
    path = tmp_path / "PPHGNetV2_L_ssld_pretrained_from_paddle.pth"
    torch.save(source.state_dict(), path)
    spec = {**TINY_MODEL, "preset": None, "backbone": "hgnetv2_l", "pretrained_backbone_path": str(path)}
    model = build_model(spec, num_classes=3)
    for key, value in source.state_dict().items():
        if not key.endswith("num_batches_tracked"):
            torch.testing.assert_close(model.backbone.state_dict()[key], value, rtol=0, atol=0)
