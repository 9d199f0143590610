"""What every job does before and after its work: device and process group, seed, results folder,
resolved spec, log file, status.json (STARTED ... SUCCESS / FAILURE)."""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from ..config import ExperimentSpec
from ..io import atomic_write_text
from ..outputs.status import StatusLogger
from . import distributed as dist

log = logging.getLogger(__name__)


@dataclass
class JobContext:
    """The environment of one job on one process."""

    spec: ExperimentSpec
    action: str
    out_dir: Path
    device: torch.device
    rank: int
    world_size: int
    seed: int
    status: StatusLogger
    final_message: str = ""

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wrap_ddp(self, model: nn.Module, *, sync_bn: bool) -> nn.Module:
        """DistributedDataParallel (with SyncBatchNorm on GPUs when asked) when several processes train."""
        if self.world_size == 1:
            return model
        if sync_bn and self.device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=True)

    def category_map_for_training(self, resume_state: dict[str, Any] | None):
        """The label ↔ category-id mapping: from the checkpoint being resumed, else from the training data."""
        from ..data.categories import CategoryMap, category_map_from_sources

        if resume_state is not None and resume_state.get("category_map"):
            return CategoryMap.from_dict(resume_state["category_map"])
        return category_map_from_sources(self.spec.dataset, self.spec.dataset.train_data_sources)


def select_device(choice: str) -> torch.device:
    """``auto``: this process's CUDA device when there is one, else the CPU."""
    if choice == "cpu" or (choice == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        from ..errors import SpecError

        raise SpecError("train.device=cuda but no CUDA device is available; use train.device=auto or cpu")
    return torch.device("cuda", dist.local_rank())


@contextmanager
def start_job(spec: ExperimentSpec, action: str, *, device: str | None = None) -> Iterator[JobContext]:
    """Set up a job; on the way out record SUCCESS (or FAILURE with the error) in status.json."""
    torch_device = select_device(device or spec.train.device)
    dist.init_process_group(torch_device)
    rank, world = dist.get_rank(), dist.get_world_size()
    out_dir = Path(spec.action_dir(action))
    status = StatusLogger(out_dir / "status.json", enabled=rank == 0)
    handler: logging.Handler | None = None
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out_dir / "experiment.yaml", yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False))
        handler = logging.FileHandler(out_dir / "log.txt", encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logging.getLogger().addHandler(handler)
    seed = spec.train.seed if spec.train.seed >= 0 else dist.broadcast_object(random.randrange(2**31))
    ctx = JobContext(spec, action, out_dir, torch_device, rank, world, seed, status)
    log.info("%s on %s (%d process%s), results in %s", action, torch_device, world, "es" if world > 1 else "", out_dir)
    status.log("STARTED", f"{action} started.")
    try:
        yield ctx
        status.log("SUCCESS", ctx.final_message or f"{action} finished successfully.")
    except BaseException as error:
        reason = "interrupted" if isinstance(error, KeyboardInterrupt) else f"{type(error).__name__}: {error}"
        status.log("FAILURE", f"{action} failed: {reason}")
        raise
    finally:
        if handler is not None:
            logging.getLogger().removeHandler(handler)
            handler.close()
        dist.destroy_process_group()
