"""Training checkpoints: TAO's names, our format, atomic writes.

Layout under ``results_dir/train/`` (TAO's names): ``model_epoch_XXX.pth`` (0-based epoch), with
``model_epoch_XXX-EMA.pth`` beside it when EMA is on, ``model_epoch_XXX_step_YYYYYYY.pth`` when
``checkpoint_interval_unit`` is ``step``, ``rtdetr_model_latest.pth`` (a symlink to the newest,
replaced atomically) and ``model_best.pth`` (the best validation so far).

A checkpoint holds only tensors and plain Python types, so ``torch.load(weights_only=True)`` reads
it: ``format``, ``format_version``, ``model``, ``ema``, ``optimizer``, ``scheduler``, ``scaler``,
``epoch`` (the epoch it was saved in), ``epoch_complete``, ``global_step``, ``step_in_epoch``,
``seed``, ``spec`` and ``category_map``. Random state is a function of (seed, rank, step), so the
seed is all a resumed run needs to draw the same numbers again.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError
from ..io import atomic_save

FORMAT = "rtdetr_tao"
FORMAT_VERSION = 1
LATEST = "rtdetr_model_latest.pth"
BEST = "model_best.pth"


def checkpoint_name(epoch: int, step: int | None = None, *, ema: bool = False) -> str:
    """``model_epoch_003.pth``, ``model_epoch_003_step_0001200.pth``, ``model_epoch_003-EMA.pth``."""
    name = f"model_epoch_{epoch:03d}" + (f"_step_{step:07d}" if step is not None else "")
    return name + ("-EMA" if ema else "") + ".pth"


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` (tensors and plain types) atomically with our format tag."""
    path = Path(path)
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, **state}
    atomic_save(path, lambda handle: torch.save(payload, handle))
    return path


def point_latest(directory: str | Path, target: str | Path) -> Path:
    """Make ``rtdetr_model_latest.pth`` refer to ``target`` (a relative symlink, swapped atomically;
    a copy where the filesystem has no symlinks)."""
    directory = Path(directory)
    link = directory / LATEST
    tmp = directory / f".{LATEST}.tmp"
    tmp.unlink(missing_ok=True)
    try:
        os.symlink(Path(target).name, tmp)
    except OSError:
        data = Path(target).read_bytes()
        atomic_save(link, lambda handle: handle.write(data))
        return link
    os.replace(tmp, link)
    return link


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read one of our checkpoints (safely: weights_only) and check its format."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, not a torch file, unsafe pickle, ...
        raise CheckpointError(f"cannot read checkpoint {path}: {type(exc).__name__}: {exc}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not an rtdetr_tao training checkpoint, so training cannot resume from it; "
            "to start from its weights use train.pretrained_model_path instead"
        )
    if state.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} was written by a newer rtdetr_tao (format {state['format_version']}); upgrade rtdetr_tao"
        )
    return state


def find_latest(directory: str | Path) -> Path | None:
    """The checkpoint ``rtdetr_model_latest.pth`` refers to, if it exists and is complete."""
    link = Path(directory) / LATEST
    return link.resolve() if link.exists() else None


def state_digest(state: dict[str, Any]) -> str:
    """A short SHA-256 over a state dict's names and tensor bytes: equal digests mean identical weights."""
    import hashlib

    digest = hashlib.sha256()
    for name in sorted(state):
        value = state[name]
        if torch.is_tensor(value):
            digest.update(name.encode())
            digest.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]
