"""CPU forward latency of our RT-DETRv2 (after ``optimize_for_inference``) vs Hugging Face's with the same weights.

Run: ``OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_model_latency.py [--presets s l] [--size 640] [--reps 7]``

Batch 1, ``torch.set_num_threads(2)``, float32, random (perturbed) weights shared by both models. Process-level
timing noise on shared CPUs is large, so the two models alternate within one process, ``--reps`` rounds of
``--iters`` forwards each, and the medians are compared.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from model_fixtures import perturb_

from rtdetr_tao.config.model import ModelSpec
from rtdetr_tao.model.build import build_model
from rtdetr_tao.model.optimize import optimize_for_inference
from rtdetr_tao.model.weights import hf_config, hf_to_reference


def _time(fn, iters: int) -> float:
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - start) / iters


def bench(preset: str, size: int, reps: int, iters: int) -> tuple[float, float]:
    """(ours, HF) median seconds per forward."""
    from transformers import RTDetrV2ForObjectDetection

    spec = ModelSpec.model_validate({"preset": preset})
    torch.manual_seed(0)
    hf = perturb_(RTDetrV2ForObjectDetection(hf_config(spec, 80))).eval()
    ours = build_model(spec, 80, eval_spatial_size=(size, size))
    ours.load_state_dict(hf_to_reference(hf.state_dict()), strict=False)
    ours = optimize_for_inference(ours)
    x = torch.rand(1, 3, size, size)
    with torch.inference_mode():
        ours_logits, hf_logits = ours(x)["pred_logits"], hf(pixel_values=x).logits
        print(f"{preset}: max |logits ours - HF| = {(ours_logits - hf_logits).abs().max().item():.2e}")
        for _ in range(2):  # warm-up
            ours(x), hf(pixel_values=x)
        times: dict[str, list[float]] = {"ours": [], "hf": []}
        for _ in range(reps):
            times["ours"].append(_time(lambda: ours(x), iters))
            times["hf"].append(_time(lambda: hf(pixel_values=x), iters))
    return statistics.median(times["ours"]), statistics.median(times["hf"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["s", "l"])
    parser.add_argument("--size", type=int, default=640)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--iters", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for preset in args.presets:
        ours, hf = bench(preset, args.size, args.reps, args.iters)
        print(
            f"{preset}: ours {ours * 1e3:.1f} ms, HF {hf * 1e3:.1f} ms, ratio ours/HF {ours / hf:.2f} "
            f"(batch 1, {args.size}x{args.size}, {args.threads} threads, median of {args.reps}x{args.iters})"
        )


if __name__ == "__main__":
    main()
