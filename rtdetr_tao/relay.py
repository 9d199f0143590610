"""Errors of torchrun workers, relayed to the process that launched them, so the user sees one line.

The launcher gives the workers a folder (``RTDETR_ERROR_DIR``); a worker that fails writes its one-line message
there (``rank<N>.json``) instead of printing it, and the launcher re-raises the lowest rank's user error (else its
internal error) once torchrun has exited. torchrun's own report of the failed child (an
``torch.distributed.elastic`` traceback) is held back while the workers left a message, and shown otherwise.
Torch-free.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from . import errors
from .io import atomic_write_json

ERROR_DIR_ENV = "RTDETR_ERROR_DIR"
_TORCHRUN_REPORT = re.compile(r"torch[./]distributed[./]elastic|Traceback \(most recent call last\)|^=+$")


def record(exc: BaseException) -> bool:
    """In a launched worker, write ``exc`` for the launcher and return True; elsewhere return False."""
    folder = os.environ.get(ERROR_DIR_ENV)
    if not folder or "LOCAL_RANK" not in os.environ:
        return False
    user = isinstance(exc, errors.RTDETRError)
    data = {"type": type(exc).__name__, "message": str(exc) if user else f"{type(exc).__name__}: {exc}", "user": user}
    atomic_write_json(Path(folder) / f"rank{int(os.environ.get('RANK', '0')):05d}.json", data)
    return True


def reraise(folder: Path) -> None:
    """Raise the first recorded worker error (user errors first, lowest rank first); no-op when none."""
    records = [json.loads(path.read_text()) for path in sorted(folder.glob("rank*.json"))]
    if not records:
        return
    first = next((r for r in records if r["user"]), records[0])
    cls = getattr(errors, first["type"], None)
    if not (isinstance(cls, type) and issubclass(cls, errors.RTDETRError)):
        cls = errors.DistributedError
    prefix = "" if first["user"] else "a worker failed: "
    raise cls(prefix + first["message"])


def run_filtered(command: Sequence[str], env: dict[str, str], folder: Path, *, hold: bool = True) -> int:
    """Run ``command`` (torchrun) with its stderr passed through, holding back (``hold``) torchrun's failure report
    while the workers left their own one-line errors in ``folder``; returns the exit code."""
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True, errors="replace")
    held: list[str] = []

    def pump() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            if hold and (held or _TORCHRUN_REPORT.search(line.rstrip("\n"))):
                held.append(line)
            else:
                sys.stderr.write(line)
                sys.stderr.flush()

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    code = process.wait()
    thread.join()
    if not any(folder.glob("rank*.json")):
        sys.stderr.writelines(held)
    return code
