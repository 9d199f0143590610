"""One trial: a real ``rtdetr train`` subprocess, watched through its ``status.json``."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

TrialState = Literal["COMPLETE", "PRUNED", "FAIL"]
Report = Callable[[int, float], bool]
"""``report(epoch, value) -> prune?``: called once per validated epoch (1-based). A run is never stopped after
its last epoch: it has completed."""


@dataclass(frozen=True)
class TrialOutcome:
    """How a trial ended. ``value`` is the last reported metric (None when there was none)."""

    state: TrialState
    value: float | None
    seconds: float
    epochs: int
    error: str | None = None


TrialRunner = Callable[[Path, Path, str, Report], TrialOutcome]
"""``runner(spec_path, trial_dir, metric, report)``: :func:`run_trial`, or a stand-in in tests."""


def run_trial(spec_path: Path, trial_dir: Path, metric: str, report: Report, *, poll_s: float = 1.0) -> TrialOutcome:
    """Run ``rtdetr train -e spec_path`` (output in ``trial_dir/train.log``), report every validation of
    ``metric`` and stop the run when ``report`` says to prune it."""
    command = [sys.executable, "-m", "rtdetr_tao.cli", "train", "-e", str(spec_path)]
    status_path = trial_dir / "train" / "status.json"
    start = time.monotonic()
    seen, epochs, value, pruned = 0, 0, None, False
    with open(trial_dir / "train.log", "wb") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT)
        try:
            while True:
                finished = process.poll() is not None
                for epoch, last_epoch, current in _new_values(status_path, metric, seen):
                    seen += 1
                    epochs, value = epoch, current
                    if report(epoch, current) and epoch < last_epoch:
                        pruned = True
                        break
                if pruned or finished:
                    break
                time.sleep(poll_s)
        finally:
            if process.poll() is None:
                _stop(process)
    seconds = time.monotonic() - start
    if pruned:
        return TrialOutcome("PRUNED", value, seconds, epochs)
    if process.returncode != 0:
        return TrialOutcome("FAIL", value, seconds, epochs, _error_line(trial_dir / "train.log", process.returncode))
    if value is None:
        error = f"training finished without a {metric} value in {status_path} (is dataset.val_data_sources set?)"
        return TrialOutcome("FAIL", None, seconds, epochs, error)
    return TrialOutcome("COMPLETE", value, seconds, epochs)


def _new_values(path: Path, metric: str, seen: int) -> list[tuple[int, int, float]]:
    """``(epoch, last epoch, value)`` of the validated epochs after the first ``seen`` ones (the file is rewritten
    atomically, so every line read is complete)."""
    if not path.exists():
        return []
    found = []
    for line in path.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        kpi = record.get("kpi") or {}
        if record.get("status") == "RUNNING" and kpi.get(metric) is not None and "epoch" in record:
            last = int(record.get("max_epoch", record["epoch"] + 1))
            found.append((int(record["epoch"]) + 1, last, float(kpi[metric])))
    return found[seen:]


def _stop(process: subprocess.Popen, grace_s: float = 30.0) -> None:
    """SIGTERM (torchrun passes it on to its workers), then SIGKILL after ``grace_s``."""
    process.terminate()
    try:
        process.wait(grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _error_line(log_path: Path, code: int) -> str:
    """The run's own one-line error (``rtdetr: error: ...``) or its last output line."""
    lines = [ln.strip() for ln in log_path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("rtdetr: ")]
    last = errors[-1] if errors else (lines[-1] if lines else "no output")
    return f"exit code {code}: {last}"
