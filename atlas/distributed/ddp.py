"""Data parallelism for the single-device policy: wrap, unwrap, and skip the gradient sync.

The policy is written as single-device PyTorch; this module applies DistributedDataParallel from
outside (NCCL on GPUs, gloo on CPU, chosen by `init_distributed`). Frozen modules have
`requires_grad=False`, so DDP neither buckets nor all-reduces them. `training.strategy: ddp`
(atlas.distributed.strategy.DDPStrategy) is built on these helpers.

Failure behaviour (why a crash on one rank does not hang the others): an exception ends the
failing process with a non-zero exit code after `teardown_distributed`; torchrun's agent then
sends SIGTERM (and SIGKILL after its grace period) to every other worker of the job, which may be
blocked inside an all-reduce. If the job is not under torchrun, gloo raises on the surviving ranks
as soon as the peer's socket closes, and NCCL's watchdog aborts the communicator after
`training.dist_timeout_minutes`. The trainer never lets ranks take different branches around a
collective: every decision that precedes one (log, validate, save, stop) depends on the step
counter or on a value all ranks agreed on (`any_rank`).
"""

from __future__ import annotations

import contextlib
from contextlib import AbstractContextManager

from torch import nn
from torch.nn.parallel import DistributedDataParallel

from atlas.distributed.env import DistInfo


def wrap_ddp(model: nn.Module, dist: DistInfo) -> nn.Module:
    """DistributedDataParallel over `model` (already on `dist.device`); identity for one process.

    DDP broadcasts rank 0's parameters and buffers at construction, so every rank starts from the
    same weights even if their initial RNG differed.
    """
    if not dist.distributed:
        return model
    device_ids = [dist.device.index] if dist.device.type == "cuda" else None
    # find_unused_parameters=False: the policy's forward uses every trainable parameter; DDP
    # raises a clear error naming the parameter if that ever stops being true.
    return DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=False)


def unwrap(model: nn.Module) -> nn.Module:
    """The policy inside DDP and/or torch.compile wrappers."""
    while True:
        if isinstance(model, DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):  # torch.compile's OptimizedModule
            model = model._orig_mod  # type: ignore[assignment]
        else:
            return model


def maybe_no_sync(model: nn.Module, skip_sync: bool) -> AbstractContextManager[None]:
    """`model.no_sync()` when `skip_sync` and the model is DDP-wrapped, else a no-op context.

    Gradient accumulation runs every micro-batch but the last under it, so gradients are
    all-reduced once per optimizer step instead of once per micro-batch.
    """
    if skip_sync and isinstance(model, DistributedDataParallel):
        return model.no_sync()
    return contextlib.nullcontext()
