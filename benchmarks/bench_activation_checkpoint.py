"""Peak host memory of one RT-DETRv2 training step (forward, loss, backward) on the CPU with
``train.activation_checkpoint`` on and off.

Each setting runs in a fresh process; the figure is the rise of the process's peak resident set
(``resource.getrusage``'s ru_maxrss) over its resident set just before the step, median of ``--repeats``.

    OMP_NUM_THREADS=2 OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_activation_checkpoint.py --preset s --size 320
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys


def rss_kib() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def one_step(preset: str, size: int, batch: int, checkpoint: bool) -> dict[str, float]:
    import torch

    from rtdetr_tao.model.build import build_criterion, build_model
    from rtdetr_tao.model.criterion import to_float

    torch.manual_seed(0)
    model = build_model({"preset": preset}, 80, activation_checkpoint=checkpoint).train()
    criterion = build_criterion({"preset": preset}, 80)
    images = torch.rand(batch, 3, size, size)
    targets = [{"labels": torch.randint(0, 80, (6,)), "boxes": torch.rand(6, 4) * 0.5 + 0.25} for _ in range(batch)]
    before = rss_kib()
    losses = criterion(to_float(model(images, targets)), targets)
    sum(losses.values()).backward()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {"step_peak_mib": (peak - before) / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="s")
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", choices=["on", "off"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(one_step(args.preset, args.size, args.batch, args.child == "on")))
        return
    results: dict[str, float] = {}
    for setting in ("off", "on"):
        runs = []
        for _ in range(args.repeats):
            cmd = [sys.executable, __file__, "--preset", args.preset, "--size", str(args.size)]
            out = subprocess.run([*cmd, "--batch", str(args.batch), "--child", setting], capture_output=True, text=True)
            if out.returncode:
                raise SystemExit(out.stderr)
            runs.append(json.loads(out.stdout.strip().splitlines()[-1])["step_peak_mib"])
        results[setting] = statistics.median(runs)
    print(
        f"preset {args.preset}, {args.batch}x3x{args.size}x{args.size}, CPU: peak memory of one training step "
        f"activation_checkpoint=false {results['off']:.0f} MiB, true {results['on']:.0f} MiB, "
        f"ratio on/off {results['on'] / results['off']:.2f} (median of {args.repeats})"
    )


if __name__ == "__main__":
    main()
