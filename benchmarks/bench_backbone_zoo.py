"""The README's backbone zoo table: parameters, GFLOPs and CPU latency (after ``optimize_for_inference``) at 640.

Run: ``OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_backbone_zoo.py [--backbones ...] [--reps 5] [--threads 2]``

Each model is RT-DETRv2 with 80 classes: the official preset where one exists (resnet_18 = preset s, resnet_50 =
preset l, hgnetv2_* = the HGNetv2 presets), else the RT-DETRv2-L settings with only ``model.backbone`` changed.
GFLOPs: ``torch.utils.flop_counter`` on one 640x640 image, multiply-adds counted as 2 FLOPs; it counts convolutions
and matrix products, not the deformable attention's ``grid_sample``. Latency: batch 1, float32, random weights,
``--threads`` threads; the models alternate within one process, ``--reps`` rounds of ``--iters`` forwards each, and
each model's median is printed with its ratio to the first model's (ratios are steadier than absolute times on a
shared CPU).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from rtdetr_tao.model.build import build_model
from rtdetr_tao.model.optimize import optimize_for_inference

PRESET_OF = {"resnet_18": "s", "resnet_50": "l", "hgnetv2_l": "hgnetv2_l", "hgnetv2_x": "hgnetv2_x"}
DEFAULT = ["resnet_18", "resnet_50", "hgnetv2_l", "convnext_tiny", "efficientvit_b1", "efficientvit_l1"]


def _model(backbone: str, size: int) -> torch.nn.Module:
    spec = {"preset": PRESET_OF[backbone]} if backbone in PRESET_OF else {"backbone": backbone}
    torch.manual_seed(0)
    return build_model(spec, 80, eval_spatial_size=(size, size)).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", default=DEFAULT)
    parser.add_argument("--size", type=int, default=640)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--iters", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    x = torch.rand(1, 3, args.size, args.size)
    models, params, flops = {}, {}, {}
    with torch.inference_mode():
        for name in args.backbones:
            model = _model(name, args.size)
            params[name] = sum(p.numel() for p in model.parameters()) / 1e6
            counter = FlopCounterMode(display=False)
            with counter:
                model(x)
            flops[name] = counter.get_total_flops() / 1e9
            models[name] = optimize_for_inference(model)
            models[name](x)  # warm-up
        times: dict[str, list[float]] = {name: [] for name in models}
        for _ in range(args.reps):
            for name, model in models.items():
                start = time.perf_counter()
                for _ in range(args.iters):
                    model(x)
                times[name].append((time.perf_counter() - start) / args.iters)
    base = statistics.median(times[args.backbones[0]])
    print(
        f"batch 1, {args.size}x{args.size}, float32, {args.threads} threads, median of {args.reps}x{args.iters}, "
        f"torch {torch.__version__}"
    )
    print(f"| model.backbone | params (M) | GFLOPs | CPU latency (ms) | latency / {args.backbones[0]} |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name in models:
        median = statistics.median(times[name])
        print(f"| {name} | {params[name]:.1f} | {flops[name]:.0f} | {median * 1e3:.0f} | {median / base:.2f} |")


if __name__ == "__main__":
    main()
