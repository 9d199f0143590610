"""Training data-loader throughput (images/s) with full augmentation at 640x640, for 0, 1 and 2 workers, on the
synthetic dataset (written to a temporary folder).

Run: ``OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_dataloader.py [--images 64] [--batch 8]``
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from rtdetr_tao.config.dataset import DatasetSpec
from rtdetr_tao.data.categories import category_map_from_sources
from rtdetr_tao.data.loader import build_train_loader
from rtdetr_tao.data.synthetic import write_split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        split = write_split(Path(tmp) / "train", args.images, size=(640, 480), seed=0)
        source = {"image_dir": str(split.image_dir), "json_file": str(split.json_file)}
        for workers in args.workers:
            spec = DatasetSpec.model_validate({
                "train_data_sources": [source], "num_classes": 4, "batch_size": args.batch, "workers": workers,
                "pin_memory": False, "augmentation": {"multi_scales": []},
            })  # fmt: skip
            cmap = category_map_from_sources(spec, spec.train_data_sources)
            loader = build_train_loader(spec, num_epochs=2, stop_epoch=2, seed=0, category_map=cmap)
            loader.set_epoch(0)
            next(iter(loader))  # start the workers
            loader.set_epoch(1)
            start = time.perf_counter()
            count = sum(len(images) for images, _ in loader)
            elapsed = time.perf_counter() - start
            print(f"workers {workers}: {count / elapsed:.1f} images/s (640x640, full augmentation, batch {args.batch})")


if __name__ == "__main__":
    main()
