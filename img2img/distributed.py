"""Distributed training through torchrun: process-group set-up and the few collectives the trainer needs.

Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) every ``img2img
train`` command runs one process per device: NCCL on CUDA, gloo on the CPU.
The trainer wraps the networks it updates in DistributedDataParallel, shards
every batch by rank (:class:`img2img.data.batches.StepSampler`), and lets
only rank 0 write.  Nothing here launches processes: torchrun does.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from img2img.errors import UserError


@dataclass(frozen=True)
class Distributed:
    """This process's place in the job: rank, world size and its device index on this machine."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def from_environment() -> Distributed:
    """Read torchrun's RANK, WORLD_SIZE and LOCAL_RANK (a single process when they are absent)."""
    try:
        return Distributed(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                           int(os.environ.get("LOCAL_RANK", 0)))
    except ValueError:
        raise UserError("RANK, WORLD_SIZE and LOCAL_RANK must be whole numbers (set them with torchrun)") from None


def setup(job: Distributed, device: torch.device) -> torch.device:
    """Join the process group (once) and return this process's device: ``cuda:LOCAL_RANK`` on CUDA."""
    if not job.enabled:
        return device
    if device.type == "cuda":
        if job.local_rank >= torch.cuda.device_count():
            raise UserError(f"LOCAL_RANK {job.local_rank} but only {torch.cuda.device_count()} CUDA devices")
        device = torch.device("cuda", job.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def gather(value: Any, job: Distributed) -> list[Any]:
    """Every rank's ``value`` (any picklable object), on every rank."""
    if not job.enabled:
        return [value]
    values: list[Any] = [None] * job.world_size
    dist.all_gather_object(values, value)
    return values


def barrier(job: Distributed) -> None:
    if job.enabled and dist.is_initialized():
        dist.barrier()


def teardown(job: Distributed, wait: bool = True) -> None:
    """Leave the process group, after waiting for every rank (so no rank exits while a peer still talks to
    it) unless this rank is failing, when waiting could hang on peers that will never arrive."""
    if job.enabled and dist.is_initialized():
        if wait:
            dist.barrier()
        dist.destroy_process_group()
