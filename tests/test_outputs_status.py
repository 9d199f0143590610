"""status.json: TAO's JSON-lines events, atomic rewrites, resumed runs, NaN → null, rank 0 only."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path

import numpy as np
import pytest

from rtdetr_tao.outputs.status import StatusLogger


def _events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_event_format(tmp_path: Path) -> None:
    path = tmp_path / "status.json"
    logger = StatusLogger(path)
    logger.log("STARTED", "Starting Training")
    logger.log(
        epoch=np.int64(3),
        max_epoch=72,
        step=400,
        max_step=9600,
        time_per_epoch=81.5,
        eta=5620.25,
        kpi={"val_mAP": np.float32(0.5), "val_mAP50": 0.75, "val_loss": float("nan")},
        losses={"loss_vfl": 0.4, "loss_bbox": float("inf")},
        lr=1e-4,
        checkpoint="model_epoch_003.pth",
    )
    logger.log("FAILURE", "out of memory")
    started, running, failure = _events(path)

    assert list(started) == ["date", "time", "status", "verbosity", "message"]
    assert re.fullmatch(r"\d\d/\d\d/\d{4}", started["date"]) and re.fullmatch(r"\d\d:\d\d:\d\d", started["time"])
    assert started["status"] == "STARTED" and started["verbosity"] == "INFO"
    assert running["status"] == "RUNNING" and running["message"] == ""
    assert running["epoch"] == 3 and running["max_step"] == 9600 and running["eta"] == 5620.25
    assert running["kpi"] == {"val_mAP": 0.5, "val_mAP50": 0.75, "val_loss": None}  # numbers stay numbers
    assert running["losses"] == {"loss_vfl": 0.4, "loss_bbox": None}
    assert running["lr"] == 1e-4 and running["checkpoint"] == "model_epoch_003.pth"
    assert failure["verbosity"] == "ERROR"
    assert "NaN" not in path.read_text() and "Infinity" not in path.read_text()


def test_resumed_run_appends(tmp_path: Path) -> None:
    path = tmp_path / "status.json"
    path.write_text('{"status": "STARTED"}\n{"status": "RUNNING", "epoch": 0}')  # no final newline
    StatusLogger(path).log("RUNNING", epoch=1)
    events = _events(path)
    assert [e["status"] for e in events] == ["STARTED", "RUNNING", "RUNNING"]
    assert events[1] == {"status": "RUNNING", "epoch": 0} and events[2]["epoch"] == 1


def test_disabled_logger_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "rank1" / "status.json"
    logger = StatusLogger(path, enabled=False)
    logger.log("STARTED", "x")
    logger.log("SUCCESS", "y", kpi={"val_mAP": 0.1})
    assert not path.parent.exists()


def test_rejects_unknown_status_and_verbosity(tmp_path: Path) -> None:
    logger = StatusLogger(tmp_path / "status.json")
    with pytest.raises(ValueError, match="status"):
        logger.log("DONE")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="verbosity"):
        logger.log("RUNNING", verbosity="DEBUG")  # type: ignore[arg-type]


def test_a_concurrent_reader_never_sees_a_partial_file(tmp_path: Path) -> None:
    path = tmp_path / "status.json"
    logger = StatusLogger(path)
    done = threading.Event()
    problems: list[str] = []
    counts: list[int] = []

    def read() -> None:
        while not done.is_set():
            try:
                text = path.read_text()
            except FileNotFoundError:
                continue
            if not text.endswith("\n"):
                problems.append(repr(text[-80:]))
            try:
                counts.append(len([json.loads(line) for line in text.splitlines()]))
            except json.JSONDecodeError as exc:
                problems.append(str(exc))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for epoch in range(300):
            logger.log(epoch=epoch, max_epoch=300, kpi={"val_mAP": epoch / 300}, message="x" * 200)
    finally:
        done.set()
        reader.join()
    assert not problems
    assert len(counts) > 10 and counts == sorted(counts)  # the reader really ran alongside, and saw growth only
    assert [e["epoch"] for e in _events(path)] == list(range(300))
    assert not [p for p in tmp_path.iterdir() if p.name != "status.json"]  # no temporary files left behind
