"""Our FAN-hybrid backbones against TAO's RT-DETR FAN (``FANFPN``), in float64.

Run (TAO's PyTorch code checked out anywhere outside this project, e.g. github.com/NVIDIA/tao_pytorch_backend):
``python benchmarks/fan_parity.py --reference /path/to/tao_pytorch_backend [--write-fixture]``

1. For each size tiny / small / base / large: our backbone (all four stages) gets seeded random weights
   (``tests/model_fixtures.perturb_``); TAO's ``fan_{tiny_8,small_12,base_12,large_12}_p4_hybrid`` loads them by name.
   The only TAO tensors left unloaded must be :data:`rtdetr_tao.model.fan.TAO_UNUSED_KEYS` (the class-token path,
   which no returned map depends on), and no name of ours may be unknown to TAO. The four stage outputs are compared
   on a 1x3x48x64 input (a 3x4 token grid) and the parameter counts printed.
2. ``--write-fixture``: stores TAO's fan_tiny outputs for our seeded weights and TAO's state-dict names and shapes in
   ``tests/fixtures/fan_tiny_tao_features.pt``, which ``tests/test_backbones.py`` compares against without TAO's code.

TAO's packages import much of the toolkit in their ``__init__`` files (and fvcore, pytorch_lightning, omegaconf);
this script imports only the FAN modules, by registering the package folders without running those files and
stubbing the three helpers they use (registries, ``get_global_rank``, TAO's logging). TAO computes the position
embedding's sine grid in float32; a pre-hook casts it to the projection's dtype so that TAO's model runs in float64
(ours computes the same float32 grid).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import types
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from model_fixtures import float64_input, perturb_, weights_sum

from rtdetr_tao.model.fan import ARCHS, FAN, TAO_UNUSED_KEYS

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "fan_tiny_tao_features.pt"
FIXTURE_INPUT = (1, 3, 48, 64)
"""Non-square, not a multiple of 32: a 3x4 token grid, odd padding in the stride-32 conv."""
TAO_NAMES = {
    "tiny": "fan_tiny_8_p4_hybrid",
    "small": "fan_small_12_p4_hybrid",
    "base": "fan_base_12_p4_hybrid",
    "large": "fan_large_12_p4_hybrid",
}
"""TAO's RT-DETR builder of each ``model.backbone: fan_<size>``."""


def seeded_backbone(size: str, seed: int = 0) -> FAN:
    """Our float64 eval-mode FAN (all four stages, unfrozen norms) with seeded perturbed random weights."""
    torch.manual_seed(seed)
    return perturb_(FAN(size, return_idx=[0, 1, 2, 3]).double().eval(), seed)


def fixture_input(seed: int = 0) -> torch.Tensor:
    return float64_input(FIXTURE_INPUT, seed)


def _import_tao_fan(path: Path) -> types.ModuleType:
    """TAO's ``nvidia_tao_pytorch.cv.rtdetr.model.backbone.fan`` without importing the rest of TAO."""

    class Registry:
        def register(self):  # TAO's decorator factory
            return lambda fn: fn

    def module(name: str, folder: Path | None = None, **attrs: object) -> None:
        mod = types.ModuleType(name)
        mod.__path__ = [str(folder)] if folder else []
        mod.__dict__.update(attrs)
        sys.modules[name] = mod

    base = path / "nvidia_tao_pytorch"
    for package in ("", "core", "core/distributed", "cv", "cv/rtdetr", "cv/rtdetr/model", "cv/rtdetr/model/backbone"):
        module(".".join(["nvidia_tao_pytorch", *filter(None, package.split("/"))]), base / package)
    module("nvidia_tao_pytorch.cv.backbone_v2", base / "cv/backbone_v2", BACKBONE_REGISTRY=Registry())
    module("nvidia_tao_pytorch.cv.rtdetr.model.backbone.registry", RTDETR_BACKBONE_REGISTRY=Registry())
    module("nvidia_tao_pytorch.core.distributed.comm", get_global_rank=lambda: 0)
    module("nvidia_tao_pytorch.core.tlt_logging", logging=logging)
    return importlib.import_module("nvidia_tao_pytorch.cv.rtdetr.model.backbone.fan")


def tao_backbone(tao: types.ModuleType, size: str, ours: FAN) -> torch.nn.Module:
    """TAO's float64 eval-mode FAN of ``size`` with the weights of ``ours``, loaded by name."""
    model = getattr(tao, TAO_NAMES[size])([0, 1, 2, 3], activation_checkpoint=False).double().eval()
    model.pos_embed.token_projection.register_forward_pre_hook(lambda m, args: (args[0].to(m.weight.dtype),))
    missing, unexpected = model.load_state_dict(ours.state_dict(), strict=False)
    unused = [k for k in model.state_dict() if TAO_UNUSED_KEYS.match(k)]
    assert not unexpected and sorted(missing) == sorted(unused), (unexpected, sorted(set(missing) ^ set(unused)))
    return model


@torch.no_grad()
def compare(tao: types.ModuleType) -> dict[str, float]:
    worst: dict[str, float] = {}
    for size in ARCHS:
        ours = seeded_backbone(size)
        theirs = tao_backbone(tao, size, ours)
        x = fixture_input()
        diffs = [(a - b).abs().max().item() for a, b in zip(ours(x), theirs.forward_feature_pyramid(x), strict=True)]
        worst[size] = max(diffs)
        n_ours = sum(p.numel() for p in ours.parameters())
        n_tao = sum(p.numel() for p in theirs.parameters())
        print(
            f"fan_{size}: max |ours - TAO| per stage {[f'{d:.1e}' for d in diffs]}; parameters ours {n_ours:,}, "
            f"TAO {n_tao:,} ({n_tao - n_ours:,} in the class-token path)"
        )
    return worst


@torch.no_grad()
def write_fixture(tao: types.ModuleType) -> None:
    ours = seeded_backbone("tiny")
    theirs = tao_backbone(tao, "tiny", ours)
    features = [f.contiguous() for f in theirs.forward_feature_pyramid(fixture_input())]
    shapes = {k: list(v.shape) for k, v in theirs.state_dict().items()}
    FIXTURE.parent.mkdir(exist_ok=True)
    torch.save({"features": features, "weights_sum": weights_sum(ours), "tao_shapes": shapes}, FIXTURE)
    print(f"wrote {FIXTURE.relative_to(ROOT)} ({FIXTURE.stat().st_size / 1e3:.0f} kB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, required=True, help="a tao_pytorch_backend checkout")
    parser.add_argument("--write-fixture", action="store_true")
    args = parser.parse_args()
    tao = _import_tao_fan(args.reference.resolve())
    if args.write_fixture:
        write_fixture(tao)
    compare(tao)


if __name__ == "__main__":
    main()
