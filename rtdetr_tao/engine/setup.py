"""What every PyTorch job does around its work: device and process group, seed, and the results
folder with its status.json (see :mod:`rtdetr_tao.outputs.job`)."""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..config import ExperimentSpec
from ..config.train import CudnnSpec
from ..outputs.job import JobOutputs, job_outputs
from ..outputs.status import StatusLogger
from . import distributed as dist
from .trainer import seed_everything

log = logging.getLogger(__name__)


@dataclass
class JobContext:
    """The environment of one job on one process."""

    action: str
    outputs: JobOutputs
    device: torch.device
    rank: int
    world_size: int
    seed: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def out_dir(self) -> Path:
        return self.outputs.out_dir

    @property
    def status(self) -> StatusLogger:
        return self.outputs.status

    def wrap_ddp(self, model: nn.Module, *, sync_bn: bool) -> nn.Module:
        """DistributedDataParallel (with SyncBatchNorm on GPUs when asked) when several processes train."""
        if self.world_size == 1:
            return model
        if sync_bn and self.device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=True)


def select_device(choice: str, gpu_ids: Sequence[int] | None = None) -> torch.device:
    """``auto``: this process's CUDA device when there is one, else the CPU; ``cuda:N``: that device.

    A process that torchrun started uses its local rank (torchrun's CUDA_VISIBLE_DEVICES holds ``gpu_ids``); a
    single process uses ``gpu_ids[0]``."""
    if choice == "cpu" or (choice == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        from ..errors import SpecError

        raise SpecError(f"device {choice} was asked for but no CUDA device is available; use auto or cpu")
    if choice.startswith("cuda:"):
        return torch.device(choice)
    if dist.WORKER_ENV in os.environ or not gpu_ids:
        return torch.device("cuda", dist.local_rank())
    return torch.device("cuda", gpu_ids[0])


def apply_cudnn(benchmark: bool, deterministic: bool) -> None:
    """``train.cudnn``: the cuDNN autotuner and deterministic-kernel switches (process-wide)."""
    torch.backends.cudnn.benchmark = benchmark
    torch.backends.cudnn.deterministic = deterministic


@contextmanager
def start_job(
    spec: ExperimentSpec,
    action: str,
    *,
    device: str,
    device_ids: Sequence[int],
    seed: int,
    cudnn: CudnnSpec,
) -> Iterator[JobContext]:
    """Set up a job: device (``device`` and ``device_ids`` as :func:`select_device` takes them), process group,
    ``seed`` (< 0: a random one, the same on every process), ``cudnn`` switches and the results folder of ``action``
    (``spec`` is written there); status.json records how it ends."""
    torch_device = select_device(device, device_ids)
    apply_cudnn(cudnn.benchmark, cudnn.deterministic)
    dist.init_process_group(torch_device)
    rank, world = dist.get_rank(), dist.get_world_size()
    try:
        with job_outputs(spec, action, is_main=rank == 0) as outputs:
            seed = seed if seed >= 0 else dist.broadcast_object(random.randrange(2**31))
            seed_everything(seed)  # model initialisation is part of the run: same seed, same weights
            ctx = JobContext(action, outputs, torch_device, rank, world, seed)
            log.info(
                "%s on %s (%d process%s), results in %s",
                action, torch_device, world, "es" if world > 1 else "", outputs.out_dir,
            )  # fmt: skip
            yield ctx
    finally:
        dist.destroy_process_group()
