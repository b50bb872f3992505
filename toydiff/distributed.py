"""Where training runs: pick the device, and join a process group when started by ``torchrun``.

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE; without them we are a single process.
CPU processes talk over gloo, CUDA processes over nccl.
"""
from __future__ import annotations

import gc
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class ProcessContext:
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def pick_device(requested: str = "auto") -> torch.device:
    """"auto" chooses cuda, then mps, then cpu; anything else is passed to torch.device."""
    if requested != "auto":
        device = torch.device(requested)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {requested!r} was asked for but CUDA is not available here")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def setup_process(requested_device: str = "auto") -> ProcessContext:
    """Join the torchrun process group if there is one; return this process's rank and device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return ProcessContext(0, 1, pick_device(requested_device))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(requested_device)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return ProcessContext(rank, world_size, device)


def barrier(context: ProcessContext) -> None:
    if context.distributed:
        dist.barrier()


def gather_objects(context: ProcessContext, value):
    """Every rank's ``value``, as a list indexed by rank (a one-item list when not distributed)."""
    if not context.distributed:
        return [value]
    gathered = [None] * context.world_size
    dist.all_gather_object(gathered, value)
    return gathered


def leave_process_group() -> None:
    """End this process's part in a torchrun run: the ranks meet, then the process group is destroyed.

    Call it once every rank is done with collectives (the train commands do, after a run that succeeded).
    Leaving it to the interpreter's exit can abort a rank now and then ("terminate called without an
    active exception"): gloo's threads, or a DistributedDataParallel wrapper still waiting to be
    garbage-collected, outlive the group. So unreachable wrappers are collected first, while the group
    still exists. A no-op in a single process.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()
