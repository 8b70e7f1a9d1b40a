"""DistributedDataParallel set-up for ``torchrun``: gloo on CPU, nccl on CUDA; rank 0 writes.

``torchrun --nproc_per_node=N -m ssmad train ...`` sets ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK``; without them training runs as a single process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


@dataclass(frozen=True)
class DistributedContext:
    """Where this process sits in the job; ``world_size == 1`` when not distributed."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Only the main process writes checkpoints, logs and reports."""
        return self.rank == 0


def init_distributed(device: torch.device) -> DistributedContext:
    """Join the process group ``torchrun`` describes in the environment (or none without it)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedContext()
    context = DistributedContext(
        rank=int(os.environ["RANK"]),
        world_size=world_size,
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
    )
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return context


def distributed_device(device: torch.device, context: DistributedContext) -> torch.device:
    """One GPU per process on CUDA (``cuda:LOCAL_RANK``); the device itself elsewhere."""
    if context.enabled and device.type == "cuda":
        torch.cuda.set_device(context.local_rank)
        return torch.device("cuda", context.local_rank)
    return device


class _Reconstructor(nn.Module):
    """The trainable path as one module for DDP: encoder features -> decoder features."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        return self.model.decode(features)


def trainable_network(model: nn.Module, context: DistributedContext, device: torch.device) -> nn.Module:
    """``model.decode`` as a module; wrapped in DistributedDataParallel when distributed."""
    network: nn.Module = _Reconstructor(model)
    if context.enabled:
        device_ids = [device.index] if device.type == "cuda" else None
        network = DistributedDataParallel(network, device_ids=device_ids)
    return network


def gather_objects(value: Any, context: DistributedContext) -> list[Any]:
    """``value`` of every process, in rank order (``[value]`` when not distributed)."""
    if not context.enabled:
        return [value]
    values = [None] * context.world_size
    dist.all_gather_object(values, value)
    return values


def barrier(context: DistributedContext) -> None:
    """Wait for every process (no-op when not distributed)."""
    if context.enabled:
        dist.barrier()


def any_process(flag: bool, context: DistributedContext, device: torch.device) -> bool:
    """True on every process when ``flag`` is True on at least one (``flag`` itself when not distributed)."""
    if not context.enabled:
        return flag
    value = torch.tensor([float(flag)], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def shutdown(context: DistributedContext) -> None:
    """Leave the process group."""
    if context.enabled and dist.is_initialized():
        dist.destroy_process_group()
