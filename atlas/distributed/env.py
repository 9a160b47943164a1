"""Process-group setup from the torchrun environment (RANK, WORLD_SIZE, LOCAL_RANK).

A plain `python atlas/train.py` is a world of one with no process group. Under torchrun the backend
is NCCL on GPUs and gloo on CPU, and the collective timeout comes from the config so a hung rank
errors out instead of blocking the job forever.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as torch_dist

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1 or torch_dist.is_initialized()

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(timeout_minutes: int = 30, device: str | None = None) -> DistInfo:
    """Read torchrun's environment, pick the device and start the process group if needed."""
    rank = int(os.environ.get("RANK", 0))
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    use_cuda = torch.cuda.is_available() and device != "cpu"
    if use_cuda:
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if world_size > 1 and not torch_dist.is_initialized():
        backend = "nccl" if use_cuda else "gloo"
        timeout = datetime.timedelta(minutes=timeout_minutes)
        kwargs: dict[str, Any] = {"device_id": dev} if use_cuda else {}
        torch_dist.init_process_group(backend=backend, timeout=timeout, **kwargs)
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=dev)


def teardown_distributed() -> None:
    """Destroy the process group if one exists (also called on errors)."""
    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.destroy_process_group()


def barrier() -> None:
    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.barrier()


def all_reduce_mean(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Average scalar metrics across ranks (identity for a single process)."""
    if not (torch_dist.is_available() and torch_dist.is_initialized()) or not values:
        return dict(values)
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    torch_dist.all_reduce(t, op=torch_dist.ReduceOp.SUM)
    t /= torch_dist.get_world_size()
    return dict(zip(keys, t.tolist()))


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Send a picklable object from `src` to every rank (identity for a single process)."""
    if not (torch_dist.is_available() and torch_dist.is_initialized()):
        return obj
    box = [obj]
    torch_dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's picklable `obj`, indexed by rank (`[obj]` for a single process).

    Used by the checkpoint manager to collect each rank's RNG state into one file.
    """
    if not (torch_dist.is_available() and torch_dist.is_initialized()):
        return [obj]
    out: list[Any] = [None] * torch_dist.get_world_size()
    torch_dist.all_gather_object(out, obj)
    return out


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum `tensor` over ranks in place and return it (identity for a single process).

    Used for exact dataset-wide metrics: ranks reduce sums and counts, never means of means.
    """
    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.all_reduce(tensor, op=torch_dist.ReduceOp.SUM)
    return tensor


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when `flag` is true on at least one (e.g. a preemption signal).

    Every rank must call it at the same point; the answer is the same everywhere, so the ranks
    take the same branch afterwards and never wait on a collective the others skipped.
    """
    if not (torch_dist.is_available() and torch_dist.is_initialized()):
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    torch_dist.all_reduce(t, op=torch_dist.ReduceOp.MAX)
    return bool(t.item() > 0)


@contextlib.contextmanager
def main_process_first(dist: DistInfo) -> Iterator[None]:
    """Run the body on rank 0 first, then on the other ranks (one barrier on every rank).

    For work with side effects on shared files (generating the synthetic dataset, computing
    normalization statistics): rank 0 writes them, the others then read what it wrote.
    """
    if not dist.is_main:
        barrier()
    yield
    if dist.is_main:
        barrier()
