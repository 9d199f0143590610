"""CPU training throughput (images/s) of our RT-DETRv2 model + criterion vs Hugging Face's
``RTDetrV2ForObjectDetection`` with its built-in loss, same config, same weights, same batches.

Run: ``OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_train_throughput.py [--preset s] [--size 320] [--batch 4]``

Forward + loss + backward + AdamW step, denoising on. The two alternate within one process (``--reps`` rounds of
``--iters`` steps each) and the medians are compared, since CPU timings here swing between processes.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from rtdetr_tao.config.model import ModelSpec
from rtdetr_tao.model.build import build_criterion, build_model
from rtdetr_tao.model.weights import hf_config, load_weights


def _targets(batch: int, gen: torch.Generator) -> list[dict[str, torch.Tensor]]:
    out = []
    for _ in range(batch):
        centers, wh = torch.rand(3, 2, generator=gen) * 0.6 + 0.2, torch.rand(3, 2, generator=gen) * 0.2 + 0.05
        out.append({"labels": torch.randint(0, 80, (3,), generator=gen), "boxes": torch.cat([centers, wh], 1)})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="s")
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--iters", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from transformers import RTDetrV2ForObjectDetection

    spec = ModelSpec.model_validate({"preset": args.preset})
    torch.manual_seed(0)
    hf = RTDetrV2ForObjectDetection(hf_config(spec, 80)).train()
    ours = build_model(spec, 80).train()
    load_weights(ours, hf.state_dict())
    criterion = build_criterion(spec, 80)
    opt_ours = torch.optim.AdamW(ours.parameters(), lr=1e-5)
    opt_hf = torch.optim.AdamW(hf.parameters(), lr=1e-5)
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(args.batch, 3, args.size, args.size, generator=gen)
    targets = _targets(args.batch, gen)
    hf_labels = [{"class_labels": t["labels"], "boxes": t["boxes"]} for t in targets]

    def step_ours() -> None:
        losses = criterion(ours(images, targets), targets)
        opt_ours.zero_grad()
        sum(losses.values()).backward()
        opt_ours.step()

    def step_hf() -> None:
        loss = hf(pixel_values=images, labels=hf_labels).loss
        opt_hf.zero_grad()
        loss.backward()
        opt_hf.step()

    for step in (step_ours, step_hf):  # warm-up
        step()
    times: dict[str, list[float]] = {"ours": [], "hf": []}
    for _ in range(args.reps):
        for name, step in (("ours", step_ours), ("hf", step_hf)):
            start = time.perf_counter()
            for _ in range(args.iters):
                step()
            times[name].append((time.perf_counter() - start) / args.iters)
    ours_t, hf_t = statistics.median(times["ours"]), statistics.median(times["hf"])
    print(
        f"{args.preset} @ {args.size}, batch {args.batch}: ours {args.batch / ours_t:.2f} img/s, "
        f"HF {args.batch / hf_t:.2f} img/s, throughput ratio ours/HF {hf_t / ours_t:.2f} "
        f"(median of {args.reps}x{args.iters} steps, {args.threads} threads)"
    )


if __name__ == "__main__":
    main()
