"""The processes of a run: one by default, several under ``torchrun`` (DistributedDataParallel).

``torchrun`` sets ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``; :class:`Processes` starts the
process group from them (NCCL on CUDA, gloo on the CPU) and gives the few collectives the
training loop needs. With one process every method is a no-op.
"""
from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["Processes", "training_device"]


class Processes:
    """This process's rank and the world size; under torchrun the process group is started here
    (unless the caller started one) and ended by :meth:`close`."""

    def __init__(self, device: torch.device):
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.started = False
        if self.world_size > 1 and not dist.is_initialized():
            # rank 0 evaluates while the others wait at a barrier: allow an hour
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timedelta(minutes=60))
            self.started = True
        self.rank = dist.get_rank() if self.world_size > 1 else 0
        self.device = device

    @property
    def main(self) -> bool:
        return self.rank == 0

    def mean(self, values: Tensor) -> Tensor:
        """The mean of ``values`` over the processes (the same tensor back with one process)."""
        if self.world_size > 1:
            values = values.clone()
            dist.all_reduce(values)
            values /= self.world_size
        return values

    def any(self, flag: bool) -> bool:
        """True on every process when ``flag`` is True on at least one."""
        if self.world_size == 1:
            return flag
        box = torch.tensor([float(flag)], device=self.device)
        dist.all_reduce(box, op=dist.ReduceOp.MAX)
        return bool(box.item())

    def from_main(self, value: float) -> float:
        """Rank 0's ``value`` on every process (so all agree, e.g., on when a time budget ends)."""
        if self.world_size == 1:
            return value
        box = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.broadcast(box, 0)
        return float(box)

    def barrier(self) -> None:
        if self.world_size > 1 and self.device.type == "cuda":
            dist.barrier(device_ids=[self.device.index])
        elif self.world_size > 1:
            dist.barrier()

    def close(self) -> None:
        if self.started:
            dist.destroy_process_group()


def training_device(name: str) -> torch.device:
    """``torch.device(name)``, checked; a bare "cuda" under torchrun means this process's ``LOCAL_RANK`` GPU."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {name!r}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} asked for, but CUDA is not available")
        if device.index is None:
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    return device
