"""``status.json`` as TAO writes it: JSON lines, one object per event, written by rank 0 only.

Each line starts with ``date`` (MM/DD/YYYY), ``time`` (HH:MM:SS, local), ``status``, ``verbosity`` and
``message``, followed by whichever of ``epoch``, ``max_epoch``, ``step``, ``max_step``, ``time_per_epoch``,
``eta``, ``kpi``, ``losses``, ``lr`` and extra keys the event carries. Numbers stay numbers (TAO writes
mAP as strings; we do not), NaN and ±inf become null.

Every event rewrites the whole file through a temporary file and a rename, so a reader (the TAO
orchestrator polls this file) always sees complete lines. That costs O(file size) per event: log per
epoch or per evaluation, not per step.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, get_args

from ..io import atomic_write_text
from .jsonable import jsonable

Status = Literal["STARTED", "RUNNING", "SUCCESS", "FAILURE", "SKIPPED"]
Verbosity = Literal["INFO", "WARNING", "ERROR"]


class StatusLogger:
    """Appends events to ``path``; an existing file (a resumed run) is kept. ``enabled=False`` (ranks other
    than 0) makes every call a no-op that touches no file."""

    def __init__(self, path: str | Path, *, enabled: bool = True) -> None:
        self.path = Path(path)
        self.enabled = enabled
        self._text = ""
        if enabled and self.path.exists():
            text = self.path.read_text(encoding="utf-8")
            self._text = text if not text or text.endswith("\n") else text + "\n"

    def log(
        self,
        status: Status = "RUNNING",
        message: str = "",
        *,
        verbosity: Verbosity | None = None,
        epoch: int | None = None,
        max_epoch: int | None = None,
        step: int | None = None,
        max_step: int | None = None,
        time_per_epoch: float | str | None = None,
        eta: float | str | None = None,
        kpi: dict[str, Any] | None = None,
        losses: dict[str, Any] | None = None,
        lr: float | None = None,
        **extra: Any,
    ) -> None:
        """Append one event. ``verbosity`` defaults to ERROR for FAILURE and INFO otherwise; fields left
        at None are omitted; ``time_per_epoch`` and ``eta`` are best given in seconds."""
        if status not in get_args(Status):
            raise ValueError(f"status must be one of {get_args(Status)}, not {status!r}")
        verbosity = verbosity or ("ERROR" if status == "FAILURE" else "INFO")
        if verbosity not in get_args(Verbosity):
            raise ValueError(f"verbosity must be one of {get_args(Verbosity)}, not {verbosity!r}")
        if not self.enabled:
            return
        now = datetime.now()
        event = {
            "date": now.strftime("%m/%d/%Y"),
            "time": now.strftime("%H:%M:%S"),
            "status": status,
            "verbosity": verbosity,
            "message": message,
        }
        optional = {
            "epoch": epoch,
            "max_epoch": max_epoch,
            "step": step,
            "max_step": max_step,
            "time_per_epoch": time_per_epoch,
            "eta": eta,
            "kpi": kpi,
            "losses": losses,
            "lr": lr,
            **extra,
        }
        event.update({key: value for key, value in optional.items() if value is not None})
        self._text += json.dumps(jsonable(event), allow_nan=False) + "\n"
        atomic_write_text(self.path, self._text)
