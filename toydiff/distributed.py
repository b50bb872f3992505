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


DEVICE_CHOICES = "auto, cpu, cuda, cuda:N or mps"


def _mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def pick_device(requested: str = "auto") -> torch.device:
    """"auto" chooses cuda, then mps, then cpu; otherwise cpu, cuda, cuda:N or mps, checked against this machine.

    A device this machine lacks, a CUDA index past its last GPU or a name torch does not know raises ValueError
    naming what was asked for and what can be, before any work starts (torch itself would fail later, deep inside
    the first tensor moved there).
    """
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    try:
        device = torch.device(requested)
    except (RuntimeError, TypeError):
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"unknown device {requested!r}: expected {DEVICE_CHOICES}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {requested!r} was asked for but CUDA is not available here")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ValueError(f"device {requested!r} was asked for but this machine has {count} CUDA device(s), "
                             f"cuda:0 to cuda:{count - 1}")
    if device.type == "mps" and not _mps_available():
        raise ValueError(f"device {requested!r} was asked for but MPS (Apple's GPU) is not available here")
    return device


def process_device(requested_device: str = "auto") -> torch.device:
    """The device this process trains on, without joining any process group: pick_device's answer, except
    that under torchrun each process takes the GPU of its LOCAL_RANK. Work done before training (encoding
    a data set through a VAE, say) goes there, not to the CPU.

    That GPU is also made this process's current CUDA device, at once: work that lands on "the current
    device" (a CUDA context, a stream, a kernel launched without an explicit index) would otherwise go to
    GPU 0 from every process before the process group is joined. Raises ValueError where LOCAL_RANK names
    a GPU this process cannot see.
    """
    device = pick_device(requested_device)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and device.type == "cuda":
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        count = torch.cuda.device_count()
        if local_rank >= count:
            raise ValueError(f"this process has LOCAL_RANK {local_rank} but sees {count} CUDA device(s): start at "
                             f"most {count} process(es) per node (torchrun --nproc_per_node), or check that "
                             "CUDA_VISIBLE_DEVICES does not hide the process's GPU")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    return device


def setup_process(requested_device: str = "auto") -> ProcessContext:
    """Join the torchrun process group if there is one; return this process's rank and device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    device = process_device(requested_device)
    if world_size <= 1:
        return ProcessContext(0, 1, device)
    rank = int(os.environ["RANK"])
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
