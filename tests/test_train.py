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
    assert "wandb" not in names  # wandb.enable is false: no run
    assert (out / "rtdetr_model_latest.pth").resolve().name == "model_epoch_001.pth"
    records = _status(out / "status.json")
    assert records[0]["status"] == "STARTED" and records[-1]["status"] == "SUCCESS"
    running = [r for r in records if r["status"] == "RUNNING" and "kpi" in r]
    assert running and {"val_mAP", "val_mAP50"} <= set(running[-1]["kpi"])
    checkpoint = torch.load(out / "model_epoch_001.pth", weights_only=True)
    assert checkpoint["category_map"]["label_to_category"] == [1, 3, 5, 7]
    _check_report(out / "report")  # train.plots defaults to true
    assert (out / "report" / "curves.png").is_file() and "curves.png" in (out / "report" / "report.html").read_text()

    assert main(["evaluate", "-e", str(spec), f"evaluate.checkpoint={out / 'model_epoch_001.pth'}"]) == 0
    results = json.loads((tmp_path / "results" / "evaluate" / "results.json").read_text())
    assert {"AP", "AP50", "AP75", "APs", "APm", "APl", "test_mAP"} <= set(results)
    final = _status(tmp_path / "results" / "evaluate" / "status.json")[-1]
    assert final["status"] == "SUCCESS" and final["kpi"]["test_mAP"] == results["AP"]
    _check_report(tmp_path / "results" / "evaluate" / "report")


def _check_report(folder: Path) -> None:
    """A report with every plot, one table row per synthetic class, and only links to files beside it."""
    from rtdetr_tao.outputs.report import PLOTS

    page = (folder / "report.html").read_text(encoding="utf-8")
    assert all((folder / name).is_file() for name in PLOTS)
    for name in ("rectangle", "ellipse", "triangle", "cross"):
        assert f"<td class='class'>{name}</td>" in page
    for src in re.findall(r"<img src='([^']+)'", page):
        assert (folder / src).is_file(), src


def test_error_paths(tmp_path, data, capsys) -> None:
    spec = _spec(tmp_path, data)
    assert main(["train", "-e", str(spec), "train.resume_training_checkpoint_path=/nope.pth"]) == 2
    assert "/nope.pth does not exist" in capsys.readouterr().err
    assert main(["evaluate", "-e", str(spec), "evaluate.checkpoint=/nope.pth"]) == 2
    assert "/nope.pth does not exist" in capsys.readouterr().err
    assert main(["train", "-e", str(spec), "train.num_epochs=1", "train.plots=false"]) == 0
    assert not (tmp_path / "results" / "train" / "report").exists()
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
    # early stopping runs on both ranks (rank 1 writes no best checkpoint) and stops both at the same epoch
    # (the tiny model's val_mAP stays 0.0, so the second validation is the first without improvement)
    monitor = {"warmup_steps": 2, "monitor_name": "val_mAP"}
    deim = {"aug": DEIM_AUG, **DEIM} if recipe == "deim" else {}
    spec = _spec(tmp_path, data, num_gpus=2, num_epochs=3, early_stopping_patience=1, optim=monitor, **deim)
    env = {**os.environ, "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}
    process = _run_cli(["train", "-e", str(spec)], env=env)
    _, err = process.communicate(timeout=600)
    assert process.returncode == 0, err
    digests = dict(re.findall(r"rank (\d): final parameters (\w+)", err))
    assert set(digests) == {"0", "1"} and digests["0"] == digests["1"]
    records = _status(tmp_path / "results" / "train" / "status.json")
    assert sum(r["status"] == "STARTED" for r in records) == 1  # rank 1 wrote nothing
    assert records[-1]["status"] == "SUCCESS" and records[-1]["message"].startswith("early stopping: val_mAP")
    assert max(r.get("epoch", -1) for r in records) == 1


def test_resume_after_sigkill_keeps_best_checkpoint_and_patience(tmp_path, data) -> None:
    """val_loss rises after epoch 0 on this data, so patience 2 stops the run after epoch 2. A run killed after
    epoch 1 must resume with its best value and bad-round count: stop after epoch 2 as well, and leave
    model_best.pth (epoch 0) alone."""
    patience = {"num_epochs": 6, "early_stopping_patience": 2}
    full = _spec(tmp_path / "full", data, **patience)
    assert _run_cli(["train", "-e", str(full)]).wait(timeout=600) == 0
    full_out = tmp_path / "full" / "results" / "train"
    full_status = _status(full_out / "status.json")
    assert full_status[-1]["message"].startswith("early stopping")
    stop_epoch = max(r.get("epoch", -1) for r in full_status)
    assert stop_epoch == 2

    killed = _spec(tmp_path / "killed", data, **patience)
    out = tmp_path / "killed" / "results" / "train"
    process = _run_cli(["train", "-e", str(killed)])
    deadline = time.time() + 300
    while not (out / "model_epoch_001.pth").exists():
        assert process.poll() is None and time.time() < deadline, "training ended before it could be killed"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    best_before = torch.load(out / "model_best.pth", weights_only=True)
    assert best_before["epoch"] == 0
    resumed = _run_cli(["train", "-e", str(killed)])
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read()
    status = _status(out / "status.json")
    assert status[-1]["message"] == full_status[-1]["message"]
    assert max(r.get("epoch", -1) for r in status) == stop_epoch
    best = torch.load(out / "model_best.pth", weights_only=True)
    assert best["epoch"] == 0 and best["best"] == best_before["best"]
    assert best["best"] == torch.load(full_out / "model_best.pth", weights_only=True)["best"]


def _wandb_records(run_dir: Path) -> list:
    """The records of an offline W&B run (``run-<id>.wandb``: a LevelDB-style log of protobuf records)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = next(run_dir.glob("run-*.wandb")).read_bytes()
    assert data[:4] == b":W&B"
    pos, block, pending, records = 7, 32768, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # too little room for a record header: the block is padded
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last fragment of one
            record = pb.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def _wandb_run(run_dir: Path) -> tuple[dict, dict[int, set[str]]]:
    """(run metadata, {step: logged keys}) of an offline run."""
    meta: dict = {}
    history: dict[int, set[str]] = {}
    for record in _wandb_records(run_dir):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
            meta = {"id": run.run_id, "project": run.project, "entity": run.entity, "group": run.run_group}
            meta.update(tags=list(run.tags), name=run.display_name)
            meta["config"] = {item.key for item in run.config.update}
        elif kind == "history":
            keys = {item.key or "/".join(item.nested_key) for item in record.history.item}
            history.setdefault(record.history.step.num, set()).update(k for k in keys if not k.startswith("_"))
    return meta, history


def _train_in_subprocess(spec: Path, keys: list[str]) -> None:
    """``rtdetr train`` in a fresh process: W&B and ClearML start threads and (ClearML) fork, which can deadlock
    inside a test process that already holds other libraries' threads."""
    process = _run_cli(["train", "-e", str(spec), *keys])
    _, err = process.communicate(timeout=600)
    assert process.returncode == 0, err


def test_wandb_offline_run_logs_and_a_resumed_job_continues_it(tmp_path, data, monkeypatch) -> None:
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONSOLE", "off")
    spec = _spec(tmp_path, data, num_epochs=1)
    keys = ["wandb.enable=true", "wandb.project=shapes", "wandb.entity=team", "wandb.group=tiny", "wandb.name=r1"]
    keys.append("wandb.tags=[a, b]")
    _train_in_subprocess(spec, keys)
    out = tmp_path / "results" / "train"
    (first,) = sorted((out / "wandb").glob("offline-run-*"))
    meta, history = _wandb_run(first)
    assert meta["project"] == "shapes" and meta["entity"] == "team" and meta["group"] == "tiny"
    assert meta["tags"] == ["a", "b"] and meta["name"] == "r1"
    assert {"model", "dataset", "train"} <= meta["config"] and "encryption_key" not in meta["config"]
    train_keys = {"train/loss", "train/lr", "train/loss_vfl", "train/loss_bbox", "train/loss_giou"}
    assert train_keys <= history[4]  # 4 steps per epoch: the epoch's last step is logged
    assert {"val/val_mAP", "val/val_mAP50", "val/val_loss", "epoch/loss", "epoch"} <= history[4]
    run_id = meta["id"]
    assert torch.load(out / "model_epoch_000.pth", weights_only=True)["hooks"]["WandBHook"] == {"run_id": run_id}

    _train_in_subprocess(spec, [*keys, "train.num_epochs=2"])  # resumes from epoch 0
    (second,) = [r for r in (out / "wandb").glob("offline-run-*") if r != first]
    meta, history = _wandb_run(second)
    assert meta["id"] == run_id and min(history) == 8 and "val/val_mAP" in history[8]


def test_clearml_offline_task_logs_losses_lr_and_metrics(tmp_path, data, monkeypatch) -> None:
    pytest.importorskip("clearml")
    monkeypatch.setenv("CLEARML_OFFLINE_MODE", "1")
    monkeypatch.setenv("HOME", str(tmp_path))  # the offline session goes to ~/.clearml/cache/offline/
    spec = _spec(tmp_path, data, num_epochs=1)
    keys = ["clearml.enable=true", "clearml.project=shapes", "clearml.task=tiny", "clearml.tags=[a, b]"]
    _train_in_subprocess(spec, keys)
    (session,) = [p for p in (tmp_path / ".clearml" / "cache" / "offline").iterdir() if p.is_dir()]
    task = json.loads((session / "task.json").read_text())
    assert task["name"] == "tiny" and sorted(task["tags"]) == ["a", "b"]
    events = [e for line in (session / "metrics.jsonl").read_text().splitlines() for e in json.loads(line)]
    logged = {(e["metric"], e["variant"], e["iter"]) for e in events if e["type"] == "training_stats_scalar"}
    assert {("train", "loss", 4), ("train", "lr", 4), ("train", "loss_vfl", 4), ("epoch", "loss", 4)} <= logged
    assert {("val", "val_mAP", 4), ("val", "val_loss", 4)} <= logged
    checkpoint = torch.load(tmp_path / "results" / "train" / "model_epoch_000.pth", weights_only=True)
    assert checkpoint["hooks"]["ClearMLHook"] == {"task_id": task["id"]}
