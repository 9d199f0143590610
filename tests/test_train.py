"""``rtdetr train`` / ``rtdetr evaluate`` end to end on a tiny model and the synthetic dataset: results layout,
status.json, resume after SIGKILL, two-process gloo training, and the error paths."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from rtdetr_tao.cli import main
from rtdetr_tao.data.synthetic import write_split

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


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("shapes")
    train = write_split(root / "train", 16, size=(64, 64), seed=0)
    val = write_split(root / "val", 4, size=(64, 64), seed=1)
    return {"train": train, "val": val}


DEIM = {"recipe": "deim"}
DEIM_AUG = {"mosaic_epochs": [0, 2], "mixup_epochs": [0, 2], "stop_epoch": 2}  # Dense O2O in every step


def _spec(tmp_path: Path, data: dict, aug: dict | None = None, **train) -> Path:
    source = lambda split: {"image_dir": str(split.image_dir), "json_file": str(split.json_file)}  # noqa: E731
    spec = {
        "results_dir": str(tmp_path / "results"),
        "model": TINY_MODEL,
        "dataset": {
            "train_data_sources": [source(data["train"])],
            "val_data_sources": source(data["val"]),
            "test_data_sources": source(data["val"]),
            "num_classes": 4,
            "batch_size": 4,
            "workers": 0,
            "augmentation": {
                "train_spatial_size": [64, 64],
                "eval_spatial_size": [64, 64],
                "multi_scales": [64, 96],
                **(aug or {}),
            },
        },
        "train": {
            "num_epochs": 2,
            "device": "cpu",
            "seed": 3,
            "enable_ema": True,
            "optim": {"warmup_steps": 2},
            **train,
        },
    }
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _status(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_train_then_evaluate(tmp_path, data) -> None:
    spec = _spec(tmp_path, data)
    assert main(["train", "-e", str(spec)]) == 0
    out = tmp_path / "results" / "train"
    names = {p.name for p in out.iterdir()}
    expected = {"model_epoch_000.pth", "model_epoch_001.pth", "rtdetr_model_latest.pth", "model_best.pth"}
    assert expected <= names and {"experiment.yaml", "status.json", "log.txt", "val_metrics.json"} <= names
    assert "model_epoch_001-EMA.pth" in names
    assert (out / "rtdetr_model_latest.pth").resolve().name == "model_epoch_001.pth"
    records = _status(out / "status.json")
    assert records[0]["status"] == "STARTED" and records[-1]["status"] == "SUCCESS"
    running = [r for r in records if r["status"] == "RUNNING" and "kpi" in r]
    assert running and {"val_mAP", "val_mAP50"} <= set(running[-1]["kpi"])
    checkpoint = torch.load(out / "model_epoch_001.pth", weights_only=True)
    assert checkpoint["category_map"]["label_to_category"] == [1, 3, 5, 7]

    assert main(["evaluate", "-e", str(spec), f"evaluate.checkpoint={out / 'model_epoch_001.pth'}"]) == 0
    results = json.loads((tmp_path / "results" / "evaluate" / "results.json").read_text())
    assert {"AP", "AP50", "AP75", "APs", "APm", "APl", "test_mAP"} <= set(results)
    final = _status(tmp_path / "results" / "evaluate" / "status.json")[-1]
    assert final["status"] == "SUCCESS" and final["kpi"]["test_mAP"] == results["AP"]


def test_error_paths(tmp_path, data, capsys) -> None:
    spec = _spec(tmp_path, data)
    assert main(["train", "-e", str(spec), "train.resume_training_checkpoint_path=/nope.pth"]) == 2
    assert "/nope.pth does not exist" in capsys.readouterr().err
    assert main(["evaluate", "-e", str(spec), "evaluate.checkpoint=/nope.pth"]) == 2
    assert "/nope.pth does not exist" in capsys.readouterr().err
    assert main(["train", "-e", str(spec), "train.num_epochs=1"]) == 0
    latest = tmp_path / "results" / "train" / "rtdetr_model_latest.pth"
    code = main(["train", "-e", str(spec), "model.hidden_dim=64", f"train.resume_training_checkpoint_path={latest}"])
    assert code == 2 and "model.hidden_dim" in capsys.readouterr().err
    assert main(["train", "-e", str(spec), "dataset.num_classes=8"]) == 2  # would auto-resume from latest
    assert "cannot resume" in capsys.readouterr().err
    assert main(["train", "-e", str(spec), "dataset.num_classes=6", f"results_dir={tmp_path / 'other'}"]) == 2
    assert "use dataset.num_classes=4" in capsys.readouterr().err


def _run_cli(args: list[str], **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "rtdetr_tao.cli", *args], stderr=subprocess.PIPE, text=True, **kwargs
    )


def _final_weights(out: Path) -> dict[str, torch.Tensor]:
    return torch.load(out / "model_epoch_001.pth", weights_only=True)["model"]


@pytest.mark.parametrize("recipe", ["rtdetrv2", "deim"])
def test_resume_after_sigkill_gives_the_same_weights(tmp_path, data, recipe) -> None:
    step_ckpt = {"checkpoint_interval_unit": "step", "checkpoint_interval": 1}
    if recipe == "deim":  # mosaic partners, mosaic / mixup draws and the FlatCosine lr must resume exactly too
        step_ckpt |= {"aug": DEIM_AUG, **DEIM}
    full = _spec(tmp_path / "full", data, **step_ckpt)
    assert _run_cli(["train", "-e", str(full)]).wait(timeout=600) == 0

    killed = _spec(tmp_path / "killed", data, **step_ckpt)
    out = tmp_path / "killed" / "results" / "train"
    process = _run_cli(["train", "-e", str(killed)])
    deadline = time.time() + 300
    while not (out / "model_epoch_000_step_0000002.pth").exists():  # mid-epoch 0 (4 steps per epoch)
        assert process.poll() is None and time.time() < deadline, "training ended before it could be killed"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert _status(out / "status.json")[-1]["status"] != "SUCCESS"
    resumed = _run_cli(["train", "-e", str(killed)])
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read()
    assert "resuming from" in (out / "log.txt").read_text()

    a, b = _final_weights(tmp_path / "full" / "results" / "train"), _final_weights(out)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("recipe", ["rtdetrv2", pytest.param("deim", marks=pytest.mark.slow)])
def test_two_process_gloo_training(tmp_path, data, recipe) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    deim = {"aug": DEIM_AUG, **DEIM} if recipe == "deim" else {}
    spec = _spec(tmp_path, data, num_gpus=2, num_epochs=1, **deim)
    env = {**os.environ, "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}
    process = _run_cli(["train", "-e", str(spec)], env=env)
    _, err = process.communicate(timeout=600)
    assert process.returncode == 0, err
    digests = dict(re.findall(r"rank (\d): final parameters (\w+)", err))
    assert set(digests) == {"0", "1"} and digests["0"] == digests["1"]
    records = _status(tmp_path / "results" / "train" / "status.json")
    assert sum(r["status"] == "STARTED" for r in records) == 1  # rank 1 wrote nothing
    assert records[-1]["status"] == "SUCCESS"
