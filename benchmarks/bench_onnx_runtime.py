"""CPU latency (batch 1) and throughput (batch 8) of RT-DETRv2 at 640x640: PyTorch eager (as built, and after
``optimize_for_inference``) vs ONNX Runtime (the graph ``rtdetr export`` writes, from the optimised model), for the
grid_sample graph and the discrete-sampling graph, with the same random weights.

Run: ``OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_onnx_runtime.py [--preset s] [--reps 3]``
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from rtdetr_tao.export import ExportModule, export_onnx
from rtdetr_tao.model.build import build_model
from rtdetr_tao.model.optimize import optimize_for_inference
from rtdetr_tao.model.postprocess import PostProcessor


def _median_time(fn, reps: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _forward(module: torch.nn.Module, images: torch.Tensor, sizes: torch.Tensor):
    def run() -> None:
        with torch.inference_mode():
            module(images, sizes)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="s")
    parser.add_argument("--size", type=int, default=640)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    size = (args.size, args.size)
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    with tempfile.TemporaryDirectory() as tmp:
        for method in ("default", "discrete"):
            torch.manual_seed(0)
            model = build_model({"preset": args.preset, "cross_attn_method": method}, 80, eval_spatial_size=size)
            module = ExportModule(model.eval(), PostProcessor(300)).eval()
            fast = ExportModule(optimize_for_inference(model), PostProcessor(300)).eval()
            path = Path(tmp) / f"{method}.onnx"
            export_onnx(fast, path, size, batch=-1, opset=17, verbose=False)
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            for batch in (1, 8):
                images = torch.rand(batch, 3, *size)
                sizes = torch.full((batch, 2), float(args.size))
                feeds = {"images": images.numpy(), "orig_target_sizes": sizes.numpy().astype(np.float32)}

                def onnx(session=session, feeds=feeds) -> None:
                    session.run(None, feeds)

                t_eager = _median_time(_forward(module, images, sizes), args.reps)
                t_fast = _median_time(_forward(fast, images, sizes), args.reps)
                t_ort = _median_time(onnx, args.reps)
                shown = ", ".join(
                    f"{name} {t * 1e3:.0f} ms ({batch / t:.2f} img/s)"
                    for name, t in (("eager", t_eager), ("optimized", t_fast), ("ONNX Runtime", t_ort))
                )
                print(
                    f"{args.preset} {method:8s} batch {batch}: {shown}; time / eager: optimized "
                    f"{t_fast / t_eager:.2f}, ORT {t_ort / t_eager:.2f}"
                )


if __name__ == "__main__":
    main()
