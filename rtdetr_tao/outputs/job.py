"""The results folder of one job, torch-free: resolved spec, log file, status.json lifecycle.

``results_dir/<action>/experiment.yaml`` (the resolved spec), ``log.txt`` and ``status.json`` with
STARTED, then SUCCESS or FAILURE (with the error). Only the main process writes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import SpecError
from ..io import atomic_write_text
from .status import StatusLogger


@dataclass
class JobOutputs:
    """Where a job writes, and the status it reports at the end."""

    out_dir: Path
    status: StatusLogger
    final_message: str = ""
    final_fields: dict[str, Any] = field(default_factory=dict)
    """Extra status.json fields of the SUCCESS entry, e.g. ``{"kpi": {"test_mAP": 0.41}}``."""


def _file_on_the_way(path: Path) -> Path:
    """The first of ``path`` and its parents that exists and is not a folder."""
    return next((p for p in (*reversed(path.parents), path) if p.exists() and not p.is_dir()), path)


@contextmanager
def job_outputs(spec: Any, action: str, *, is_main: bool = True) -> Iterator[JobOutputs]:
    """Create ``spec.action_dir(action)``; record STARTED, then SUCCESS, or FAILURE and re-raise."""
    out_dir = Path(spec.action_dir(action))
    status = StatusLogger(out_dir / "status.json", enabled=is_main)
    handler: logging.Handler | None = None
    if is_main:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise SpecError(
                f"results_dir: cannot create the folder {out_dir}: {_file_on_the_way(out_dir)} is a file, not a "
                "folder; set results_dir to a folder"
            ) from None
        except OSError as exc:
            raise SpecError(f"results_dir: cannot create the folder {out_dir}: {exc.strerror or exc}") from None
        atomic_write_text(out_dir / "experiment.yaml", yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False))
        handler = logging.FileHandler(out_dir / "log.txt", encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logging.getLogger().addHandler(handler)
    job = JobOutputs(out_dir, status)
    status.log("STARTED", f"{action} started.")
    try:
        yield job
        status.log("SUCCESS", job.final_message or f"{action} finished successfully.", **job.final_fields)
    except BaseException as error:
        reason = "interrupted" if isinstance(error, KeyboardInterrupt) else f"{type(error).__name__}: {error}"
        status.log("FAILURE", f"{action} failed: {reason}")
        raise
    finally:
        if handler is not None:
            logging.getLogger().removeHandler(handler)
            handler.close()
