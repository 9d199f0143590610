"""How many of TAO AutoML's recommendations over our train schema our spec loader accepts, per algorithm.

    python benchmarks/tao_automl_acceptance.py [--schema schemas/train.schema.json] [--ranges] [--count 50]

Needs nvidia-tao-automl (``pip install --no-deps -r tests/requirements-tao.txt``). Each algorithm runs until it
has given ``--count`` recommendations (hyperband-style brackets may overshoot to the end of a rung); each is
answered with a random metric so that the search goes on, and checked with ``load_spec(..., action="train")``,
what ``rtdetr train --dry-run`` runs. ``--ranges`` passes the schema's ``custom_param_ranges`` (the search
windows) to TAO as its own range overrides.
"""

from __future__ import annotations

import argparse
import collections
import copy
import json
import logging
import random
import tempfile
import warnings
from pathlib import Path

import numpy as np
import yaml

from rtdetr_tao.config import load_spec
from rtdetr_tao.errors import SpecError

ALGORITHMS = ("bayesian", "hyperband", "bfbo", "bohb", "asha", "dehb", "pbt", "hyperband_es")
DATA = {"image_dir": "/data/train/images.tar.gz", "json_file": "/data/train/annotations.json"}


def measure(schema: dict, algorithm: str, count: int, ranges: bool, base_path: Path) -> tuple[int, int, list[str]]:
    """(generated, accepted, first refusals) for one algorithm; a crash of TAO's code is reported as a refusal."""
    from tao_automl import AutoML

    np.random.seed(0)
    random.seed(0)
    base = yaml.safe_load(base_path.read_text())
    generated = accepted = 0
    refusals: list[str] = []
    with tempfile.TemporaryDirectory() as workspace:
        try:
            search = AutoML(
                workspace=workspace,
                network="rtdetr",
                train_specs=base,
                settings={
                    "algorithm": algorithm,
                    "metric": "val_mAP",
                    "automl_max_recommendations": count,
                    "automl_max_epochs": 27,
                },
                custom_param_ranges=schema.get("custom_param_ranges") if ranges else None,
                search_schema=schema,
            )
            for _ in range(20 * count):
                if generated >= count or search.is_complete():
                    break
                for rec in search.next_recommendation():
                    generated += 1
                    overrides = [f"{key}={json.dumps(value)}" for key, value in rec.specs.items()]
                    try:
                        load_spec(base_path, overrides, action="train")
                        accepted += 1
                    except SpecError as exc:
                        refusals.append(str(exc))
                    search.report_result(rec.id, float(np.random.rand()))
        except Exception as exc:  # TAO's own code failing on our schema is a finding, not a script error
            refusals.append(f"tao_automl crashed: {type(exc).__name__}: {exc}")
    return generated, accepted, refusals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schema", default="schemas/train.schema.json")
    parser.add_argument("--ranges", action="store_true", help="Pass the schema's custom_param_ranges to TAO.")
    parser.add_argument("--count", type=int, default=50)
    parser.add_argument("--algorithms", default=",".join(ALGORITHMS))
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    warnings.simplefilter("ignore")
    schema = json.loads(Path(args.schema).read_text())
    base = copy.deepcopy(schema["default"])
    base["dataset"]["train_data_sources"] = [DATA]
    base["dataset"]["val_data_sources"] = DATA
    with tempfile.TemporaryDirectory() as tmp:
        base_path = Path(tmp) / "base.yaml"
        base_path.write_text(yaml.safe_dump(base))
        for algorithm in args.algorithms.split(","):
            generated, accepted, refusals = measure(schema, algorithm, args.count, args.ranges, base_path)
            common = collections.Counter(r.split(": ", 1)[-1][:120] for r in refusals).most_common(2)
            print(f"{algorithm:<13} generated {generated:3d}  accepted {accepted:3d}  {common if common else ''}")


if __name__ == "__main__":
    main()
