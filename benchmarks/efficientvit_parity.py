"""Our EfficientViT backbones (timm's ``efficientvit_mit``) against MIT's own code, in float64, through MIT's names.

Run (github.com/mit-han-lab/efficientvit checked out anywhere outside this project):
``python benchmarks/efficientvit_parity.py --reference /path/to/efficientvit [--write-fixture]``

For ``efficientvit_l0`` (built as timm's L1 with MIT's L0 depths 1, 1, 1, 4, 4) and ``efficientvit_b0``:

1. MIT's ``efficientvit_backbone_{l0,b0}`` (efficientvit/models/efficientvit/backbone.py) is built; the stage widths
   and block counts of both models are printed side by side.
2. Our backbone gets seeded random weights (``tests/model_fixtures.perturb_``); MIT's model receives them under its own
   names: each MIT key is translated to ours with the loader's MIT-layout mapping
   (``rtdetr_tao.model.timm_backbone.FOREIGN_LAYOUTS``) and MIT loads the result with ``strict=True``, so every name
   on both sides is covered.
3. The four stage maps (strides 4 / 8 / 16 / 32; MIT's ``stage1..4``) are compared on a 1x3x64x64 input. MIT's bare
   backbone uses BatchNorm's default eps 1e-5 (so does TAO's copy); MIT's classification zoo sets 1e-7 on the
   L-series (``cls_model_zoo.py``), as timm does: the L0 comparison is made with MIT at 1e-7, and the difference at
   MIT's default is printed as well.
4. ``--write-fixture`` stores MIT's stage maps for our seeded weights and MIT's key names in
   ``tests/fixtures/efficientvit_mit_features.pt``; ``tests/test_backbones.py`` rebuilds a MIT-layout checkpoint from
   those names, loads it through ``model.pretrained_backbone_path`` and compares, without MIT's code.

MIT's package imports ``onnxsim`` and ``segment_anything`` for its apps only; modules of those packages that are not
installed are stubbed here, since none of their code runs.
"""

from __future__ import annotations

import argparse
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from model_fixtures import float64_input, perturb_, weights_sum

from rtdetr_tao.model.build import build_backbone
from rtdetr_tao.model.timm_backbone import TimmBackbone

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "efficientvit_mit_features.pt"
FIXTURE_INPUT = (1, 3, 64, 64)
SIZES = {"efficientvit_l0": "efficientvit_backbone_l0", "efficientvit_b0": "efficientvit_backbone_b0"}
"""Our ``model.backbone`` value → MIT's builder."""
_STUBBED = ("onnxsim", "segment_anything")


def seeded_backbone(name: str, seed: int = 0) -> TimmBackbone:
    """Our float64 eval-mode backbone ``name`` (all four stages, unfrozen norms) with seeded perturbed weights."""
    torch.manual_seed(seed)
    spec = {"backbone": name, "return_interm_indices": [0, 1, 2, 3], "freeze_norm": False}
    spec |= {"feat_strides": [4, 8, 16, 32], "feat_channels": [256] * 4, "num_feature_levels": 4}
    return perturb_(build_backbone(spec).double().eval(), seed)


MIT_ATTENTION_EPS = 1e-15
"""MIT's (and TAO's) LiteMLA denominator eps; timm's ``efficientvit_mit`` uses 1e-5."""


def mit_numerics_(backbone: TimmBackbone) -> TimmBackbone:
    """Give timm's linear attention (``LiteMLA``) MIT's numerics, for comparisons only: MIT's eps, and the attention
    product in the input's dtype (timm computes it in float32 also for float64 inputs)."""

    def attention(module: torch.nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        out = q @ (k.transpose(-1, -2) @ v)
        return out[..., :-1] / (out[..., -1:] + module.eps)

    for module in backbone.modules():
        if type(module).__name__ == "LiteMLA":
            module.eps = MIT_ATTENTION_EPS
            module._attn = types.MethodType(attention, module)
    return backbone


def fixture_input(seed: int = 0) -> torch.Tensor:
    return float64_input(FIXTURE_INPUT, seed)


def mit_layout(ours: TimmBackbone, mit_keys: list[str]) -> dict[str, torch.Tensor]:
    """Our weights under MIT's names ``mit_keys``, each found through the loader's MIT → ours translation."""
    state = ours.state_dict()
    translated = ours.adapt_state_dict(dict.fromkeys(mit_keys))
    return {mit: state[own] for mit, own in zip(mit_keys, translated, strict=True)}


def _placeholder(attr: str) -> type:
    if attr.startswith("__"):
        raise AttributeError(attr)
    return type(attr, (), {})


class _Stubs(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Empty modules for missing packages in ``_STUBBED``: every attribute is a placeholder class."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> importlib.machinery.ModuleSpec | None:
        if name.split(".")[0] in _STUBBED and importlib.machinery.PathFinder.find_spec(name, path) is None:
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        module = types.ModuleType(spec.name)
        module.__path__ = []
        module.__getattr__ = _placeholder  # type: ignore[method-assign]
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        return None


def _import_reference(path: Path) -> types.ModuleType:
    sys.meta_path.append(_Stubs())
    sys.path.insert(0, str(path))
    from efficientvit.models.efficientvit import backbone

    return backbone


def _fmt(diffs: list[float]) -> str:
    return "max |ours - MIT| per stage " + ", ".join(f"{d:.2e}" for d in diffs)


def _set_bn_eps(model: torch.nn.Module, eps: float) -> None:
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.eps = eps


@torch.no_grad()
def compare(mit: types.ModuleType, name: str) -> tuple[float, dict]:
    """Max |ours - MIT| over the four stage maps, and the fixture record (MIT's outputs and key names)."""
    reference = getattr(mit, SIZES[name])().double().eval()
    ours = seeded_backbone(name)
    print(f"{name}: MIT width_list {reference.width_list}, ours (strides 4..32) {ours.out_channels}")
    mit_keys = list(reference.state_dict())
    reference.load_state_dict(mit_layout(ours, mit_keys), strict=True)
    large = not hasattr(reference, "input_stem")
    timm_eps = next(m.eps for m in ours.modules() if isinstance(m, torch.nn.BatchNorm2d))
    x = fixture_input()
    if large and timm_eps != 1e-5:
        out = reference(x)
        diffs = [(a - out[f"stage{i + 1}"]).abs().max().item() for i, a in enumerate(ours(x))]
        print(f"{name}: as built, vs MIT with its default BatchNorm eps 1e-5 (TAO's): {_fmt(diffs)}")
        _set_bn_eps(reference, timm_eps)
    out = reference(x)
    expected = [out[f"stage{i + 1}"].contiguous() for i in range(4)]
    diffs = [(a - b).abs().max().item() for a, b in zip(ours(x), expected, strict=True)]
    print(f"{name}: as built (timm's attention: eps 1e-5, float32 product), BatchNorm eps {timm_eps:g}: {_fmt(diffs)}")
    diffs = [(a - b).abs().max().item() for a, b in zip(mit_numerics_(ours)(x), expected, strict=True)]
    print(f"{name}: with MIT's attention numerics (architecture and weights mapping): {_fmt(diffs)}")
    record = {"features": expected, "mit_keys": mit_keys, "weights_sum": weights_sum(ours), "bn_eps": timm_eps}
    return max(diffs), record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, required=True, help="the mit-han-lab/efficientvit checkout")
    parser.add_argument("--write-fixture", action="store_true")
    args = parser.parse_args()
    mit = _import_reference(args.reference.resolve())
    records = {}
    for name in SIZES:
        worst, records[name] = compare(mit, name)
        print(f"{name}: max |ours - MIT| over the four stages {worst:.2e}")
    if args.write_fixture:
        FIXTURE.parent.mkdir(exist_ok=True)
        torch.save(records, FIXTURE)
        print(f"wrote {FIXTURE.relative_to(ROOT)} ({FIXTURE.stat().st_size / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()
