"""``train.recipe: rtdetrv2`` vs ``deim`` at equal epochs: the quick-start model on the synthetic shapes dataset.

Run (CPU; data via ``python -m rtdetr_tao.data.synthetic data/shapes``):
``OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_recipe.py --epochs 10 20 --seeds 0 1 2``

Each (epochs, seed) trains both recipes with ``rtdetr train -e spec_templates/quickstart.yaml`` (one process each,
identical spec but ``train.recipe``), one after the other, and appends the final epoch's val mAP / mAP50 to
``--out`` (JSON lines), so an interrupted benchmark keeps what finished; rerunning skips finished runs. The table
gives mean ± spread (half the max - min range) per recipe and epochs, over the seeds that finished.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

RECIPES = ("rtdetrv2", "deim")


def run_one(spec: str, recipe: str, epochs: int, seed: int, root: Path) -> dict:
    """Train one configuration from scratch; its final validation metrics and wall time."""
    out = root / f"{recipe}_e{epochs}_s{seed}"
    command = [
        sys.executable, "-m", "rtdetr_tao.cli", "train", "-e", spec,
        f"results_dir={out}", f"train.recipe={recipe}", f"train.num_epochs={epochs}", f"train.seed={seed}",
        f"train.validation_interval={epochs}", f"train.checkpoint_interval={epochs}",
    ]  # fmt: skip
    start = time.time()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=(out.parent / f"{out.name}.log").open("w"))
    metrics = json.loads((out / "train" / "val_metrics.json").read_text())
    return {
        "recipe": recipe,
        "epochs": epochs,
        "seed": seed,
        "mAP": metrics["val_mAP"],
        "mAP50": metrics["val_mAP50"],
        "final_epoch": metrics["epoch"],
        "seconds": round(time.time() - start, 1),
    }


def table(rows: list[dict]) -> str:
    """Markdown table: recipe x epochs → mAP and mAP50 mean ± spread, seeds finished."""
    lines = ["| epochs | recipe | seeds | mAP | mAP50 |", "|---|---|---|---|---|"]
    for epochs in sorted({r["epochs"] for r in rows}):
        for recipe in RECIPES:
            done = [r for r in rows if r["epochs"] == epochs and r["recipe"] == recipe]
            if not done:
                continue
            cells = []
            for key in ("mAP", "mAP50"):
                values = [r[key] for r in done]
                spread = (max(values) - min(values)) / 2
                cells.append(f"{statistics.mean(values):.3f} ± {spread:.3f}")
            seeds = ",".join(str(r["seed"]) for r in sorted(done, key=lambda r: r["seed"]))
            lines.append(f"| {epochs} | {recipe} | {seeds} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="spec_templates/quickstart.yaml")
    parser.add_argument("--epochs", type=int, nargs="+", default=[10, 20])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--root", default="results/bench_recipe")
    parser.add_argument("--out", default="results/bench_recipe/results.jsonl")
    parser.add_argument("--table-only", action="store_true", help="print the table of --out and exit")
    args = parser.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    if not args.table_only:
        for epochs in args.epochs:
            for seed in args.seeds:
                for recipe in RECIPES:
                    if any((r["recipe"], r["epochs"], r["seed"]) == (recipe, epochs, seed) for r in rows):
                        continue
                    row = run_one(args.spec, recipe, epochs, seed, Path(args.root))
                    rows.append(row)
                    with out.open("a") as f:
                        f.write(json.dumps(row) + "\n")
                    print(json.dumps(row), flush=True)
    print(table(rows))


if __name__ == "__main__":
    main()
