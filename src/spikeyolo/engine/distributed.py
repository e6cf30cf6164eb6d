"""Multi-process training with PyTorch's own engine (DDP), started by ``torchrun``.

``torchrun --nproc_per_node N -m spikeyolo train ...`` sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``;
:func:`setup` then joins the process group (``nccl`` on CUDA, ``gloo`` on CPU). Without those variables
everything here is a no-op for a single process (rank 0, world size 1).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        """Only the main process writes files, validates and prints."""
        return self.rank == 0


def env_info() -> DistInfo:
    """Rank, local rank and world size from the environment torchrun sets (single process without them)."""
    return DistInfo(int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0)),
                    int(os.environ.get("WORLD_SIZE", 1)))


def setup(device: torch.device, timeout_s: float = 1800.0) -> DistInfo:
    """Join the process group when started by torchrun; on CUDA, bind this process to its local GPU.

    Returns the process's :class:`DistInfo`; the device to use is :func:`process_device` of it.
    """
    info = env_info()
    if not info.enabled:
        return info
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
    return info


def process_device(device: torch.device, info: DistInfo) -> torch.device:
    """The device of this process: its local GPU under DDP on CUDA, else ``device``."""
    if info.enabled and device.type == "cuda":
        return torch.device("cuda", info.local_rank)
    return device


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def broadcast(obj, info: DistInfo, src: int = 0):
    """``obj`` of rank ``src`` on every rank (any picklable plain object)."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_true(flag: bool, info: DistInfo, device: torch.device) -> bool:
    """True on every rank only if ``flag`` is true on every rank (so all ranks stop together)."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item() > 0.5)
