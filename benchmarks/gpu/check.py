"""GPU check: proves the CUDA paths of rtdetr_tao and measures GPU speed in one short run, with one JSON report.

Run on a GPU machine with ``bash benchmarks/gpu/run.sh`` (it installs the carried wheels first), or directly:
``python -m benchmarks.gpu.check [--out results/gpu_check.json] [--device cuda] [--tiny] [--budget-s 360]``.

Sections (each one's failure is recorded as its error and the others still run; the report is rewritten after
each section, so a run cut short keeps what it measured):

- ``train_<precision>``: 50 steps (one epoch) of RT-DETRv2-S at 640, batch 16, on the synthetic set, through the
  train action, for fp32, fp16 and bf16: the loss the action logs every 10 steps (finite, falling), img/s between
  the first and the last of those (TensorBoard's wall times), peak memory;
- ``train_<precision>_activation_checkpoint``: the same with ``train.activation_checkpoint`` on, and the peak
  memory against the run without it;
- ``evaluate_cuda_vs_cpu``: one checkpoint evaluated on both devices: mAP of each, and the largest score and box
  differences of the detections;
- ``latency``: forward latency at batch 1 and 8, eager fp32 and fp16 (autocast), ours (after
  ``optimize_for_inference``) against Hugging Face's ``RTDetrV2ForObjectDetection`` with the same weights, as
  ratios measured in one process;
- ``quantize_modelopt``: ModelOpt FP8 PTQ of the checkpoint, then evaluate and Q/DQ ONNX export, through the
  actions;
- ``cli_train``: ``rtdetr train`` in a subprocess with ``train.num_gpus=1`` on the device for one epoch;
- ``latency_compile``: the same latency comparison after ``torch.compile`` (last: compiling takes the longest).

``--device cpu --tiny`` runs the same code paths with a tiny model at 64x64 (20 steps of batch 2, int8 instead of
FP8, the ``eager`` compile backend, batch 1 only; fp16 and bf16 training are skipped, since the trainer trains in
fp32 on the CPU), for CI.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from rtdetr_tao.config import load_spec
from rtdetr_tao.data.synthetic import SyntheticSplit, write_split
from rtdetr_tao.io import atomic_write_json

log = logging.getLogger("gpu_check")

TINY_MODEL = {
    "preset": "s",
    "hidden_dim": 32,
    "enc_hidden_dim": 32,
    "feat_channels": [32, 32, 32],
    "dim_feedforward": 64,
    "dec_dim_feedforward": 64,
    "num_queries": 20,
    "num_select": 20,
    "dn_number": 10,
    "nheads": 4,
}
NUM_CLASSES = 4  # the synthetic set's shapes
PRECISIONS = ("fp32", "fp16", "bf16")


@dataclass(frozen=True)
class Sizes:
    """How big each part of the check is."""

    model: dict[str, Any]
    image_size: int
    batch: int
    steps: int  # one epoch of this many steps
    eval_images: int
    workers: int
    latency_batches: tuple[int, ...]
    latency_iters: int
    compile_backend: str
    quant_dtype: str
    calibration_batches: int

    @property
    def train_images(self) -> int:
        return self.batch * self.steps


FULL = Sizes(
    model={"preset": "s"},
    image_size=640,
    batch=16,
    steps=50,
    eval_images=32,
    workers=8,
    latency_batches=(1, 8),
    latency_iters=20,
    compile_backend="inductor",
    quant_dtype="fp8_e4m3fn",
    calibration_batches=4,
)
TINY = Sizes(
    model=TINY_MODEL,
    image_size=64,
    batch=2,
    steps=20,
    eval_images=4,
    workers=0,
    latency_batches=(1,),
    latency_iters=2,
    compile_backend="eager",  # graph capture without a C++ toolchain or minutes of compiling
    quant_dtype="int8",  # FP8 needs CUDA
    calibration_batches=1,
)


@dataclass
class Check:
    """One run of the check: its settings, its data, and the report it fills."""

    device: torch.device
    sizes: Sizes
    work: Path
    out: Path
    deadline: float
    report: dict[str, Any] = field(default_factory=dict)
    _data: dict[str, SyntheticSplit] = field(default_factory=dict)
    _checkpoint: Path | None = None

    # --- shared inputs -------------------------------------------------------------------------

    def data(self) -> dict[str, SyntheticSplit]:
        """The synthetic train and val splits at the check's image size (written once)."""
        if not self._data:
            size = (self.sizes.image_size, self.sizes.image_size)
            self._data = {
                "train": write_split(self.work / "data" / "train", self.sizes.train_images, size=size, seed=0),
                "val": write_split(self.work / "data" / "val", self.sizes.eval_images, size=size, seed=1),
            }
        return self._data

    def spec_file(
        self, name: str, train: dict[str, Any] | None = None, *, validate: bool = True, **sections: Any
    ) -> Path:
        """A spec for the synthetic set with ``train.*`` and other sections merged in; written as ``name``.yaml.
        ``validate``: with ``val_data_sources`` (validation at the end of the epoch)."""
        data, s = self.data(), self.sizes
        source = lambda split: {"image_dir": str(split.image_dir), "json_file": str(split.json_file)}  # noqa: E731
        spec = {
            "results_dir": str(self.work / name),
            "model": s.model,
            "dataset": {
                "train_data_sources": [source(data["train"])],
                "val_data_sources": source(data["val"]) if validate else None,
                "test_data_sources": source(data["val"]),
                "quant_calibration_data_sources": source(data["val"]),
                "num_classes": NUM_CLASSES,
                "batch_size": s.batch,
                "workers": s.workers,
                "augmentation": {
                    "train_spatial_size": [s.image_size, s.image_size],
                    "eval_spatial_size": [s.image_size, s.image_size],
                    "multi_scales": [],
                },
            },
            "train": {"num_epochs": 1, "device": self.device.type, "seed": 0, **(train or {})},
            "export": {"input_height": s.image_size, "input_width": s.image_size},
            **sections,
        }
        path = self.work / f"{name}.yaml"
        path.write_text(yaml.safe_dump(spec))
        return path

    def checkpoint(self) -> Path:
        """A trained checkpoint: the fp32 training section's, else one trained here."""
        if self._checkpoint is None:
            self._checkpoint = Path(self._train("checkpoint", {"precision": "fp32"})["checkpoint"])
        return self._checkpoint

    def save(self) -> None:
        atomic_write_json(self.out, self.report)

    # --- sections ------------------------------------------------------------------------------

    def _train(self, name: str, train: dict[str, Any]) -> dict[str, Any]:
        from rtdetr_tao.actions import train as train_action

        spec = load_spec(self.spec_file(name, train, validate=False), action="train")
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
        start = time.perf_counter()
        result = train_action.run(spec.spec)
        wall = time.perf_counter() - start
        # the loss the train action logs to TensorBoard every 10 steps, with its wall-clock time
        events = EventAccumulator(str(result.results_dir / "events"))
        events.Reload()
        points = events.Scalars("train/loss")
        losses = [p.value for p in points]
        first, last = points[0], points[-1]  # step 10 (past the first steps' warm-up) to the last step
        out = {
            "steps": last.step,
            "loss_at_step": {p.step: round(p.value, 4) for p in points},
            "loss_finite": all(map(_finite, losses)),
            "loss_falls": losses[-1] < losses[0],
            "img_per_s": round((last.step - first.step) * self.sizes.batch / (last.wall_time - first.wall_time), 2),
            "wall_s": round(wall, 2),
            "peak_memory_mib": _peak_mib(self.device),
            "checkpoint": str(result.last_checkpoint),
        }
        if name == "train_fp32" and result.last_checkpoint is not None:
            self._checkpoint = result.last_checkpoint
        return out

    def train_precision(self, precision: str, activation_checkpoint: bool) -> Callable[[], dict[str, Any]]:
        def section() -> dict[str, Any]:
            name = f"train_{precision}" + ("_activation_checkpoint" if activation_checkpoint else "")
            out = self._train(name, {"precision": precision, "activation_checkpoint": activation_checkpoint})
            out["precision"] = precision
            without = self.report.get(f"train_{precision}", {}).get("peak_memory_mib")
            if activation_checkpoint and without and out["peak_memory_mib"]:
                out["peak_memory_mib_without"] = without
                out["peak_memory_ratio"] = round(out["peak_memory_mib"] / without, 3)
            return out

        return section

    def evaluate_cuda_vs_cpu(self) -> dict[str, Any]:
        """mAP on each device through the evaluate action, and the detections of both compared image by image."""
        from rtdetr_tao.actions import evaluate as evaluate_action
        from rtdetr_tao.data.loader import build_eval_loader
        from rtdetr_tao.engine.predict import predict
        from rtdetr_tao.engine.restore import load_trained_model

        ckpt = self.checkpoint()
        out: dict[str, Any] = {"checkpoint": str(ckpt)}
        detections = {}
        for device in dict.fromkeys([self.device, torch.device("cpu")]):  # once on a CPU-only run
            path = self.spec_file(
                f"evaluate_{device.type}", {"device": device.type}, evaluate={"checkpoint": str(ckpt)}
            )
            spec = load_spec(path, action="evaluate").spec
            out[f"mAP_{device.type}"] = evaluate_action.run(spec).AP
            trained = load_trained_model(str(ckpt), spec, eval_spatial_size=(self.sizes.image_size,) * 2)
            loader, _ = build_eval_loader(spec.dataset, "test", category_map=trained.category_map)
            found, _ = predict(trained.model.to(device), loader, device, num_select=spec.model.num_select)
            detections[device.type] = {d.image_id: d for d in found}
        other = detections["cpu"]
        mine = detections[self.device.type]
        score_diff = box_diff = 0.0
        label_mismatches = 0
        for image_id, a in mine.items():
            b = other[image_id]
            top = min(10, len(a), len(b))  # the confident end; near-ties further down may swap places
            order_a, order_b = a.scores.argsort()[::-1][:top], b.scores.argsort()[::-1][:top]
            score_diff = max(score_diff, float(abs(a.scores[order_a] - b.scores[order_b]).max(initial=0.0)))
            box_diff = max(box_diff, float(abs(a.boxes[order_a] - b.boxes[order_b]).max(initial=0.0)))
            label_mismatches += int((a.labels[order_a] != b.labels[order_b]).sum())
        out.update(
            images=len(mine),
            max_score_diff_top10=score_diff,
            max_box_diff_px_top10=box_diff,
            label_mismatches_top10=label_mismatches,
            same_within_tolerance=score_diff <= 1e-2 and box_diff <= 1.0 and label_mismatches == 0,
            tolerance={"score": 1e-2, "box_px": 1.0},
        )
        return out

    def latency(self, compiled: bool) -> Callable[[], dict[str, Any]]:
        def section() -> dict[str, Any]:
            return self._latency(compiled)

        return section

    def _latency(self, compiled: bool) -> dict[str, Any]:
        """Median forward time of ours and HF's with the same weights, alternating in one process."""
        from transformers import RTDetrV2ForObjectDetection

        from rtdetr_tao.config.model import ModelSpec
        from rtdetr_tao.model.build import build_model
        from rtdetr_tao.model.optimize import optimize_for_inference
        from rtdetr_tao.model.weights import hf_config, load_weights

        spec = ModelSpec.model_validate(self.sizes.model)
        size = self.sizes.image_size
        torch.manual_seed(0)
        hf = RTDetrV2ForObjectDetection(hf_config(spec, NUM_CLASSES)).eval().to(self.device)
        ours = build_model(spec, NUM_CLASSES, eval_spatial_size=(size, size))
        report = load_weights(ours, hf.state_dict())
        ours = optimize_for_inference(ours.eval()).to(self.device)
        out: dict[str, Any] = {"weights": report.summary(), "image_size": size}
        x = torch.rand(1, 3, size, size, device=self.device)
        with torch.inference_mode():
            out["max_abs_logit_diff_fp32"] = float((ours(x)["pred_logits"] - hf(pixel_values=x).logits).abs().max())
        run_ours: Callable[[torch.Tensor], Any] = ours
        run_hf: Callable[[torch.Tensor], Any] = lambda images: hf(pixel_values=images)  # noqa: E731
        modes = {"compile_fp32": nullcontext} if compiled else {"eager_fp32": nullcontext, "eager_fp16": self._fp16}
        if compiled:
            backend = self.sizes.compile_backend
            out["compile_backend"] = backend
            run_ours, run_hf = torch.compile(ours, backend=backend), torch.compile(run_hf, backend=backend)
        for mode, context in modes.items():
            for batch in self.sizes.latency_batches:
                images = torch.rand(batch, 3, size, size, device=self.device)
                key = f"{mode}_batch{batch}"
                try:
                    start = time.perf_counter()
                    ours_ms, hf_ms = self._time_pair(run_ours, run_hf, images, context)
                    out[key] = {
                        "ours_ms": round(ours_ms, 3),
                        "hf_ms": round(hf_ms, 3),
                        "ratio_ours_over_hf": round(ours_ms / hf_ms, 3),
                        "wall_s": round(time.perf_counter() - start, 1),
                    }
                except Exception as exc:  # one mode failing (HF under compile, say) leaves the others
                    out[key] = _error(exc)
        return out

    def _fp16(self) -> Any:
        return torch.autocast(self.device.type, dtype=torch.float16)

    def _time_pair(
        self, ours: Callable[[torch.Tensor], Any], hf: Callable[[torch.Tensor], Any], x: torch.Tensor, context: Any
    ) -> tuple[float, float]:
        iters = self.sizes.latency_iters
        times: dict[str, list[float]] = {"ours": [], "hf": []}
        with torch.inference_mode(), context():
            for fn in (ours, hf):  # warm-up (and compilation)
                for _ in range(2):
                    fn(x)
            for _ in range(iters):
                for name, fn in (("ours", ours), ("hf", hf)):
                    self._sync()
                    start = time.perf_counter()
                    fn(x)
                    self._sync()
                    times[name].append((time.perf_counter() - start) * 1e3)
        return statistics.median(times["ours"]), statistics.median(times["hf"])

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def quantize_modelopt(self) -> dict[str, Any]:
        """ModelOpt PTQ through the quantize action, then evaluate and Q/DQ ONNX export of its checkpoint."""
        import onnx

        from rtdetr_tao.actions import evaluate as evaluate_action
        from rtdetr_tao.actions import export as export_action
        from rtdetr_tao.actions import quantize as quantize_action

        dtype = self.sizes.quant_dtype
        tensor = {"dtype": dtype}
        quantize = {
            "model_path": str(self.checkpoint()),
            "device": self.device.type,
            "calibration_batches": self.sizes.calibration_batches,
            "layers": [{"module_name": "*", "weights": tensor, "activations": tensor}],
        }
        spec = load_spec(self.spec_file("quantize", quantize=quantize), action="quantize").spec
        start = time.perf_counter()
        quantized = quantize_action.run(spec)
        out: dict[str, Any] = {"dtype": dtype, "quantize_s": round(time.perf_counter() - start, 1)}
        summary = json.loads((quantized.parent / "quantization_summary.json").read_text())
        out.update(modules=len(summary["layers"]), mAP_before=summary["mAP_before"], mAP_after=summary["mAP_after"])
        evaluate = {"checkpoint": str(quantized), "is_quantized": True}
        spec = load_spec(self.spec_file("quantize_eval", evaluate=evaluate), action="evaluate").spec
        out["evaluate_mAP"] = evaluate_action.run(spec).AP
        onnx_file = self.work / "quantized.onnx"
        export = {
            "checkpoint": str(quantized),
            "onnx_file": str(onnx_file),
            "is_quantized": True,
            "on_cpu": self.device.type == "cpu",
            "input_height": self.sizes.image_size,
            "input_width": self.sizes.image_size,
        }
        spec = load_spec(self.spec_file("quantize_export", export=export), action="export").spec
        export_action.run(spec)
        ops: dict[str, int] = {}
        for node in onnx.load(str(onnx_file)).graph.node:
            ops[node.op_type] = ops.get(node.op_type, 0) + 1
        out["onnx_quant_ops"] = {op: n for op, n in ops.items() if "uantize" in op}
        out["onnx_has_qdq"] = any("QuantizeLinear" in op for op in ops) and any("DequantizeLinear" in op for op in ops)
        out["onnx_mib"] = round(onnx_file.stat().st_size / 2**20, 2)
        return out

    def cli_train(self) -> dict[str, Any]:
        """``rtdetr train`` as a user runs it, in a subprocess, with ``train.num_gpus=1``."""
        path = self.spec_file("cli_train")
        overrides = ["train.num_gpus=1", f"train.device={self.device.type}"]
        command = [sys.executable, "-m", "rtdetr_tao.cli", "train", "-e", str(path), *overrides]
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, timeout=max(self.deadline - time.time(), 60))
        status = self.work / "cli_train" / "train" / "status.json"
        records = [json.loads(line) for line in status.read_text().splitlines()] if status.exists() else []
        return {
            "command": " ".join(["rtdetr", *command[3:]]),
            "returncode": done.returncode,
            "wall_s": round(time.perf_counter() - start, 1),
            "final_status": records[-1]["status"] if records else None,
            "kpi": next((r["kpi"] for r in reversed(records) if r.get("kpi")), None),
            "stderr_tail": done.stderr[-2000:],
        }


def _finite(value: float) -> bool:
    return value == value and abs(value) != float("inf")


def _peak_mib(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)


def _error(exc: BaseException) -> dict[str, Any]:
    lines = traceback.format_exception(type(exc), exc, exc.__traceback__)
    return {"error": f"{type(exc).__name__}: {exc}", "traceback_tail": "".join(lines)[-3000:]}


def environment(device: torch.device) -> dict[str, Any]:
    """What the check ran on."""
    from importlib import metadata

    versions = {}
    for name in ("torch", "torchvision", "transformers", "nvidia-modelopt", "pydantic", "onnx", "onnxruntime"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "packages": versions,
        "device": str(device),
        "cpu_count": os.cpu_count(),
    }
    if device.type == "cuda":
        env.update(
            gpu=torch.cuda.get_device_name(device), cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version()
        )
    return env


def sections(check: Check) -> list[tuple[str, Callable[[], dict[str, Any]]]]:
    """The sections in the order they run (cheapest proof first, compilation last)."""
    # on the CPU the trainer trains in fp32 whatever train.precision says: fp16 and bf16 would repeat fp32
    precisions = PRECISIONS if check.device.type == "cuda" else ("fp32",)
    out: list[tuple[str, Callable[[], dict[str, Any]]]] = []
    for precision in precisions:
        out.append((f"train_{precision}", check.train_precision(precision, activation_checkpoint=False)))
    for precision in precisions:
        name = f"train_{precision}_activation_checkpoint"
        out.append((name, check.train_precision(precision, activation_checkpoint=True)))
    out += [
        ("evaluate_cuda_vs_cpu", check.evaluate_cuda_vs_cpu),
        ("latency", check.latency(compiled=False)),
        ("quantize_modelopt", check.quantize_modelopt),
        ("cli_train", check.cli_train),
        ("latency_compile", check.latency(compiled=True)),
    ]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/gpu_check.json"), help="the JSON report")
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    parser.add_argument("--tiny", action="store_true", help="a tiny model at 64x64: the same code paths, for CI")
    parser.add_argument(
        "--budget-s", type=float, default=360.0, help="sections not started by then are skipped (compiling runs last)"
    )
    parser.add_argument("--only", nargs="+", default=None, help="run only these sections")
    parser.add_argument("--work-dir", type=Path, default=None, help="data and results (default: a temporary folder)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device here; use --device cpu --tiny for the CPU run")
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        work = args.work_dir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        check = Check(device, TINY if args.tiny else FULL, work, args.out, started + args.budget_s)
        check.report = {"mode": "tiny" if args.tiny else "full", "environment": environment(device), "sections": {}}
        results = check.report["sections"]
        for name, run in sections(check):
            if args.only and name not in args.only:
                continue
            if time.time() > check.deadline:
                results[name] = {"skipped": f"the {args.budget_s:.0f} s budget was spent before it started"}
                continue
            start, cpu = time.perf_counter(), time.process_time()
            try:
                results[name] = {"ok": True, **run()}
            except Exception as exc:
                results[name] = {"ok": False, **_error(exc)}
            results[name]["section_s"] = round(time.perf_counter() - start, 1)
            results[name]["section_cpu_s"] = round(time.process_time() - cpu, 1)  # this process's threads
            print(f"{name}: {'ok' if results[name]['ok'] else results[name]['error']} "
                  f"({results[name]['section_s']} s)", flush=True)  # fmt: skip
            check.report["total_s"] = round(time.time() - started, 1)
            check.save()
        check.report["total_s"] = round(time.time() - started, 1)
        check.save()
    failed = [name for name, result in results.items() if result.get("ok") is False]
    print(f"wrote {args.out} in {check.report['total_s']} s; failed: {', '.join(failed) or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
