"""Our HGNetv2 (backbone and full RT-DETRv2 model) against the official RT-DETRv2 code, in float64.

Run (the official repository checked out anywhere outside this project, e.g. github.com/lyuwenyu/RT-DETR):
``python benchmarks/hgnetv2_parity.py --reference /path/to/RT-DETR/rtdetrv2_pytorch [--write-fixture]``

1. For each size L / X / H: our backbone gets seeded random weights (``tests/model_fixtures.perturb_``), the
   official ``HGNetv2`` loads them by name with ``strict=True`` (so every state-dict name matches), and the four
   stage outputs of both are compared on a 1x3x33x47 input.
2. Full model: the official ``rtdetrv2_hgnetv2_l_6x_coco.yml`` model (without downloading its ImageNet weights) and
   ours from ``model.preset: hgnetv2_l`` share seeded random weights through the official state-dict names; the
   eval outputs at 640x640 are compared.
3. ``--write-fixture``: stores the official L backbone's outputs for our seeded weights in
   ``tests/fixtures/hgnetv2_l_official_features.pt``, which ``tests/test_backbones.py`` compares against without the
   official code.

The official package imports ``faster_coco_eval`` for its data pipeline only; this script stubs that module when it
is not installed, since no dataset code runs here.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import types
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from model_fixtures import float64_input, perturb_, weights_sum

from rtdetr_tao.model.build import build_model
from rtdetr_tao.model.hgnetv2 import HGNetv2

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "hgnetv2_l_official_features.pt"
FIXTURE_INPUT = (1, 3, 33, 47)
"""Odd, non-square size: exercises the stem's one-sided padding and the ceil-mode pooling."""


def seeded_backbone(size: str, seed: int = 0) -> HGNetv2:
    """Our float64 eval-mode HGNetv2 (all four stages, unfrozen norms) with seeded perturbed random weights."""
    torch.manual_seed(seed)
    model = HGNetv2(size, return_idx=[0, 1, 2, 3], freeze_at=-1, freeze_norm=False).double().eval()
    return perturb_(model, seed)


def fixture_input(seed: int = 0) -> torch.Tensor:
    return float64_input(FIXTURE_INPUT, seed)


def _import_reference(path: Path) -> types.ModuleType:
    if importlib.util.find_spec("faster_coco_eval") is None:

        def anything(attr: str) -> type:
            if attr.startswith("__"):
                raise AttributeError(attr)
            return type(attr, (), {})

        names = ["faster_coco_eval", "faster_coco_eval.utils", "faster_coco_eval.utils.pytorch"]
        names += ["faster_coco_eval.core", "faster_coco_eval.core.mask"]
        for name in names:
            module = types.ModuleType(name)
            module.__getattr__ = anything  # type: ignore[method-assign]
            module.__path__ = []
            sys.modules[name] = module
            parent, _, child = name.rpartition(".")
            if parent:
                setattr(sys.modules[parent], child, module)
    sys.path.insert(0, str(path))
    import src  # the official package

    return src


@torch.no_grad()
def compare_backbones(src: types.ModuleType) -> dict[str, float]:
    from src.nn.backbone.hgnetv2 import HGNetv2 as Official

    worst: dict[str, float] = {}
    for size in ("L", "X", "H"):
        ours = seeded_backbone(size)
        official = Official(name=size, return_idx=[0, 1, 2, 3], freeze_at=-1, freeze_norm=False).double().eval()
        official.load_state_dict(ours.state_dict(), strict=True)
        x = fixture_input()
        diffs = [(a - b).abs().max().item() for a, b in zip(ours(x), official(x), strict=True)]
        worst[size] = max(diffs)
        print(f"HGNetv2-{size} backbone: max |ours - official| per stage {[f'{d:.2e}' for d in diffs]}")
    return worst


@torch.no_grad()
def compare_full_model(src: types.ModuleType, reference: Path) -> float:
    from src.core import YAMLConfig

    config = YAMLConfig(
        str(reference / "configs/rtdetrv2/rtdetrv2_hgnetv2_l_6x_coco.yml"), HGNetv2={"pretrained": False}
    )
    official = config.model.double().eval()
    torch.manual_seed(0)
    ours = build_model({"preset": "hgnetv2_l"}, num_classes=80, eval_spatial_size=(640, 640)).double().eval()
    perturb_(ours, 0)
    ours_state, official_state = ours.state_dict(), official.state_dict()
    only_ours = sorted(set(ours_state) - set(official_state))
    only_official = sorted(set(official_state) - set(ours_state))
    print(f"state-dict names only in ours: {only_ours}, only in official: {only_official} (precomputed anchors)")
    missing, unexpected = official.load_state_dict(ours_state, strict=False)
    assert not unexpected and set(missing) <= {"decoder.anchors", "decoder.valid_mask"}, (missing, unexpected)
    x = torch.randn(1, 3, 640, 640, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    out_ours, out_official = ours(x), official(x)
    diff = max((out_ours[k] - out_official[k]).abs().max().item() for k in ("pred_logits", "pred_boxes"))
    print(f"RT-DETRv2 HGNetv2-L full model (640x640): max |ours - official| over logits and boxes {diff:.2e}")
    return diff


@torch.no_grad()
def write_fixture(src: types.ModuleType) -> None:
    from src.nn.backbone.hgnetv2 import HGNetv2 as Official

    ours = seeded_backbone("L")
    official = Official(name="L", return_idx=[0, 1, 2, 3], freeze_at=-1, freeze_norm=False).double().eval()
    official.load_state_dict(ours.state_dict(), strict=True)
    features = [f.contiguous() for f in official(fixture_input())]
    FIXTURE.parent.mkdir(exist_ok=True)
    torch.save({"features": features, "weights_sum": weights_sum(ours)}, FIXTURE)
    print(f"wrote {FIXTURE.relative_to(ROOT)} ({FIXTURE.stat().st_size / 1e3:.0f} kB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, required=True, help="the official rtdetrv2_pytorch directory")
    parser.add_argument("--write-fixture", action="store_true")
    args = parser.parse_args()
    src = _import_reference(args.reference.resolve())
    if args.write_fixture:
        write_fixture(src)
    compare_backbones(src)
    compare_full_model(src, args.reference.resolve())


if __name__ == "__main__":
    main()
