"""Multi-GPU and multi-node runs: launching through torchrun, the process-group helpers and ``unwrap`` (the model
inside a DDP wrapper).

``rtdetr train`` with ``train.num_gpus > 1``, ``train.num_nodes > 1`` or an orchestrator's
``WORLD_SIZE`` re-executes itself through ``python -m torch.distributed.run`` (an argument list,
never a shell string). The orchestrator's environment follows TAO: ``WORLD_SIZE`` is the number of
nodes, ``NODE_RANK`` (copied to ``RANK`` when that is unset) this node's rank, ``MASTER_ADDR``,
``MASTER_PORT`` (default 29500) and ``NUM_GPU_PER_NODE``. Inside the workers, DDP uses NCCL on
GPUs and gloo on the CPU; only rank 0 writes files.
"""

from __future__ import annotations

import datetime
import logging
import os
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from .. import relay
from ..errors import DistributedError

log = logging.getLogger(__name__)

WORKER_ENV = "LOCAL_RANK"
"""Set by torchrun in every worker: its presence means 'already launched'."""


@dataclass(frozen=True)
class LaunchPlan:
    """How many processes to start where."""

    nnodes: int
    nproc_per_node: int
    node_rank: int
    master_addr: str
    master_port: int
    visible_devices: str | None


def plan_launch(
    num_gpus: int, gpu_ids: Sequence[int], num_nodes: int, env: Mapping[str, str], *, use_cuda: bool
) -> LaunchPlan | None:
    """The torchrun launch this job needs, or None to run in this process.

    ``env`` is the orchestrator's environment (TAO semantics: ``WORLD_SIZE`` counts nodes).
    """
    if WORKER_ENV in env:
        return None
    nodes = int(env["WORLD_SIZE"]) if "WORLD_SIZE" in env else num_nodes
    per_node = int(env.get("NUM_GPU_PER_NODE", num_gpus))
    if nodes <= 1 and per_node <= 1:
        return None
    rank = env.get("RANK") or env.get("NODE_RANK") or "0"
    if nodes > 1 and "MASTER_ADDR" not in env:
        raise DistributedError(
            f"a {nodes}-node run needs MASTER_ADDR (the rank-0 node's address) in the environment; "
            "also set NODE_RANK on each node"
        )
    visible = ",".join(str(i) for i in list(gpu_ids)[:per_node]) if use_cuda else None
    return LaunchPlan(
        nnodes=nodes,
        nproc_per_node=per_node,
        node_rank=int(rank),
        master_addr=env.get("MASTER_ADDR", "127.0.0.1"),
        master_port=int(env.get("MASTER_PORT", "29500")),
        visible_devices=visible,
    )


def torchrun_command(plan: LaunchPlan, cli_args: Sequence[str]) -> list[str]:
    """The argument list that starts the workers, each running ``rtdetr <cli_args>``."""
    return [
        sys.executable, "-m", "torch.distributed.run",
        f"--nnodes={plan.nnodes}",
        f"--nproc-per-node={plan.nproc_per_node}",
        f"--node-rank={plan.node_rank}",
        f"--master-addr={plan.master_addr}",
        f"--master-port={plan.master_port}",
        "-m", "rtdetr_tao.cli", *cli_args,
    ]  # fmt: skip


def launch(plan: LaunchPlan, cli_args: Sequence[str]) -> int:
    """Run the workers and wait; returns torchrun's exit code, or raises the error a worker failed with."""
    env = dict(os.environ)
    env.pop("WORLD_SIZE", None)  # torchrun sets the process-level WORLD_SIZE itself
    env.pop("RANK", None)
    if plan.visible_devices is not None:
        env["CUDA_VISIBLE_DEVICES"] = plan.visible_devices
    command = torchrun_command(plan, cli_args)
    log.info(
        "launching %d process(es) on node %d of %d through torchrun (master %s:%d)",
        plan.nproc_per_node,
        plan.node_rank,
        plan.nnodes,
        plan.master_addr,
        plan.master_port,
    )
    with tempfile.TemporaryDirectory(prefix="rtdetr-errors-") as folder:
        env[relay.ERROR_DIR_ENV] = folder
        code = relay.run_filtered(command, env, Path(folder), hold="--debug" not in cli_args)
        if code:
            relay.reraise(Path(folder))  # the workers' own one-line error, not torchrun's report
    return code


def maybe_launch(
    num_gpus: int, gpu_ids: Sequence[int], num_nodes: int, device: str, cli_args: Sequence[str]
) -> int | None:
    """Relaunch ``rtdetr <cli_args>`` through torchrun when the spec asks for several processes.

    Returns torchrun's exit code, or None when this process should do the work itself.
    """
    use_cuda = device != "cpu" and torch.cuda.is_available()
    plan = plan_launch(num_gpus, gpu_ids, num_nodes, os.environ, use_cuda=use_cuda)
    return None if plan is None else launch(plan, cli_args)


# --- inside a worker ---------------------------------------------------------------------------


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel wrapper (or the model itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def init_process_group(device: torch.device, timeout_minutes: int = 30) -> None:
    """Join the torchrun process group (NCCL on CUDA, gloo on CPU); no-op outside torchrun."""
    if WORKER_ENV not in os.environ or dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=timeout_minutes))
    log.debug("joined process group: rank %d of %d (%s)", get_rank(), get_world_size(), backend)


def destroy_process_group() -> None:
    """Leave the process group, if any."""
    if dist.is_initialized():
        dist.destroy_process_group()


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def get_rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def local_rank() -> int:
    return int(os.environ.get(WORKER_ENV, "0"))


def all_reduce_mean(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Average scalars over all ranks."""
    if not dist.is_initialized() or not values:
        return values
    keys = sorted(values)
    tensor = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    tensor /= get_world_size()
    return dict(zip(keys, tensor.tolist(), strict=True))


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (a one-element list outside a process group)."""
    if not dist.is_initialized():
        return [obj]
    gathered: list[Any] = [None] * get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
