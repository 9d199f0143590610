"""The GPU check kit (benchmarks/gpu/): its tiny CPU run exercises every section, a failing section is recorded
without stopping the others, and its wheel list is complete and resolves for the GPU machine's platform."""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement

WHEELS = Path("benchmarks") / "gpu" / "wheels.txt"
PLATFORMS = [
    f"{tag}_x86_64"
    for tag in [
        "manylinux_2_35",
        "manylinux_2_34",
        "manylinux_2_31",
        "manylinux_2_28",
        "manylinux_2_27",
        "manylinux_2_24",
        "manylinux_2_17",
        "manylinux2014",
        "manylinux_2_12",
        "manylinux2010",
        "manylinux_2_5",
        "manylinux1",
    ]
]
UNREACHABLE = re.compile(
    r"NewConnectionError|Network is unreachable|Temporary failure in name resolution|Max retries exceeded|"
    r"ConnectTimeout|ReadTimeout|Could not fetch URL|ProxyError|No route to host"
)


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _wheel_list(repo_root: Path) -> tuple[dict[str, str], set[str]]:
    """(pinned name → version, names the GPU machine already has) from wheels.txt."""
    pins: dict[str, str] = {}
    preinstalled: set[str] = set()
    for line in (repo_root / WHEELS).read_text().splitlines():
        if line.startswith("# preinstalled:"):
            preinstalled = {_canonical(n) for n in line.split(":", 1)[1].split()}
        elif line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[_canonical(name)] = version.strip()
    return pins, preinstalled


def _run_check(repo_root: Path, out: Path, *args: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "2", "OMP_WAIT_POLICY": "PASSIVE"}
    command = [sys.executable, "-m", "benchmarks.gpu.check", "--device", "cpu", "--tiny", "--out", str(out), *args]
    done = subprocess.run(command, cwd=repo_root, env=env, capture_output=True, text=True, timeout=900)
    assert out.is_file(), done.stderr[-3000:]
    return json.loads(out.read_text())


def _check_sections(sections: dict) -> None:
    """What each section of a tiny CPU run must show."""
    failed = {name: s.get("error") for name, s in sections.items() if not s.get("ok")}
    assert not failed
    for name in {"train_fp32", "train_fp32_activation_checkpoint"} & set(sections):
        train = sections[name]
        assert train["steps"] == 20 and train["loss_finite"] and train["img_per_s"] > 0
        assert set(train["loss_at_step"]) == {"10", "20"}
        assert Path(train["checkpoint"]).name.startswith("model_epoch_000")
    if "evaluate_cuda_vs_cpu" in sections:
        evaluate = sections["evaluate_cuda_vs_cpu"]
        assert evaluate["images"] == 4 and evaluate["same_within_tolerance"] and 0.0 <= evaluate["mAP_cpu"] <= 1.0
    modes = {"latency": ("eager_fp32_batch1", "eager_fp16_batch1"), "latency_compile": ("compile_fp32_batch1",)}
    for name in set(modes) & set(sections):
        latency = sections[name]
        assert latency["max_abs_logit_diff_fp32"] < 1e-3  # the same weights in both models
        for mode in modes[name]:
            assert latency[mode]["ours_ms"] > 0 and latency[mode]["hf_ms"] > 0
            assert latency[mode]["ratio_ours_over_hf"] > 0
    if "latency_compile" in sections:
        assert sections["latency_compile"]["compile_backend"] == "eager"
    if "quantize_modelopt" in sections:
        quantize = sections["quantize_modelopt"]
        assert quantize["dtype"] == "int8" and quantize["modules"] > 0 and quantize["onnx_has_qdq"]
        assert quantize["mAP_before"] is not None and quantize["evaluate_mAP"] is not None
    if "cli_train" in sections:
        cli = sections["cli_train"]
        assert cli["returncode"] == 0 and cli["final_status"] == "SUCCESS" and "train.num_gpus=1" in cli["command"]


# torch.compile (dynamo tracing both models) costs as much CPU as the rest together: the slow test runs it
CHEAP = ["train_fp32", "train_fp32_activation_checkpoint", "evaluate_cuda_vs_cpu", "latency", "quantize_modelopt"]


def test_tiny_cpu_run(repo_root: Path, tmp_path: Path) -> None:
    report = _run_check(repo_root, tmp_path / "gpu_check.json", "--only", *CHEAP, "cli_train")
    assert set(report["sections"]) == {*CHEAP, "cli_train"}
    _check_sections(report["sections"])
    assert report["mode"] == "tiny" and report["environment"]["packages"]["torch"]


@pytest.mark.slow
def test_tiny_cpu_run_every_section(repo_root: Path, tmp_path: Path) -> None:
    report = _run_check(repo_root, tmp_path / "gpu_check.json")
    assert set(report["sections"]) == {*CHEAP, "cli_train", "latency_compile"}  # fp16/bf16 training: CUDA only
    _check_sections(report["sections"])


def test_a_failing_section_is_recorded_and_the_others_run(repo_root: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(repo_root))
    check = importlib.import_module("benchmarks.gpu.check")

    def boom() -> dict:
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(check, "sections", lambda _: [("boom", boom), ("fine", lambda: {"value": 1})])
    out = tmp_path / "r.json"
    assert check.main(["--device", "cpu", "--tiny", "--out", str(out)]) == 1
    sections = json.loads(out.read_text())["sections"]
    assert not sections["boom"]["ok"] and "illegal memory access" in sections["boom"]["error"]
    assert "RuntimeError" in sections["boom"]["traceback_tail"]
    assert sections["fine"]["ok"] and sections["fine"]["value"] == 1
    assert check.main(["--device", "cpu", "--tiny", "--out", str(out), "--budget-s", "0"]) == 0
    sections = json.loads(out.read_text())["sections"]
    assert all("budget" in s["skipped"] for s in sections.values())


def test_wheel_list_covers_every_requirement(repo_root: Path) -> None:
    """Every runtime dependency of rtdetr-tao (and its quantize extra) is preinstalled on the GPU machine or pinned."""
    tomllib = pytest.importorskip("tomllib", reason="Python 3.11+ reads pyproject.toml")
    pins, preinstalled = _wheel_list(repo_root)
    project = tomllib.loads((repo_root / "pyproject.toml").read_text())["project"]
    required = [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["quantize"]]
    missing = {_canonical(r.name) for r in required} - set(pins) - preinstalled
    assert not missing, f"add to {WHEELS}: {sorted(missing)}"


@pytest.mark.slow  # asks the package index (about 30 s); downloads no wheel
def test_wheel_list_resolves_for_cp312_manylinux(repo_root: Path) -> None:
    pins, preinstalled = _wheel_list(repo_root)
    with tempfile.TemporaryDirectory() as tmp:
        report_file = Path(tmp) / "report.json"
        command = [
            sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--no-deps", "--only-binary=:all:",
            "--python-version", "3.12", "--implementation", "cp", *[a for p in PLATFORMS for a in ("--platform", p)],
            "--target", str(Path(tmp) / "never"), "--report", str(report_file), "-r", str(repo_root / WHEELS),
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        if done.returncode != 0 and UNREACHABLE.search(done.stderr + done.stdout):
            pytest.skip(f"the package index is unreachable: {UNREACHABLE.search(done.stderr + done.stdout)[0]}")
        assert done.returncode == 0, done.stderr[-3000:]
        report = json.loads(report_file.read_text())
    resolved = {_canonical(item["metadata"]["name"]): item for item in report["install"]}
    assert {name: item["metadata"]["version"] for name, item in resolved.items()} == pins
    for item in resolved.values():
        wheel = item["download_info"]["url"].rsplit("/", 1)[1]
        assert re.search(r"-(py3|cp312|cp3\d+-abi3)[^-]*-(none|abi3|cp312)-(any|.*manylinux.*x86_64)\.whl$", wheel), (
            wheel
        )
    # what each wheel requires (on CPython 3.12 Linux, no extras) is pinned too, or already on the GPU machine
    environment = default_environment() | {"python_version": "3.12", "python_full_version": "3.12.0"}
    environment |= {"sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64"}
    for name, item in resolved.items():
        for text in item["metadata"].get("requires_dist", []):
            requirement = Requirement(text)
            if requirement.marker is not None and not requirement.marker.evaluate(environment | {"extra": ""}):
                continue
            dependency = _canonical(requirement.name)
            assert dependency in pins or dependency in preinstalled, f"{name} requires {text}: add it to {WHEELS}"
            if dependency in pins:
                assert requirement.specifier.contains(pins[dependency], prereleases=True), f"{name} requires {text}"
