"""Parallelism strategies: one object per `training.strategy` that wraps, steps, saves and exports.

    training.strategy   class                module
    ddp (default)       DDPStrategy          atlas.distributed.strategy (over atlas.distributed.ddp)
    fsdp2               FSDP2Strategy        atlas.distributed.fsdp2  (torch fully_shard + DCP)
    deepspeed           DeepSpeedStrategy    atlas.distributed.deepspeed_engine  (ZeRO stage 2)

The trainer and the checkpoint manager talk to a `Strategy` through a handful of hooks, in this
order, every one called on every rank:

    wrap(policy) -> model             before the optimizer is built (FSDP2 shards parameters here)
    prepare(model, optimizer) -> model   after it (DeepSpeed builds its engine here)
    build_scaler(precision)           the GradScaler (sharded for FSDP2, disabled for DeepSpeed)
    zero_grad / micro_batch / backward / optimizer_step     the train step
    gathered(model)                   context for evaluation (FSDP2 gathers the shards once)
    save_state / load_state           model + optimizer state of a checkpoint (sharded formats)
    export_state_dict(model)          consolidated weights for `save_pretrained` (rank 0)

Variants are looked up by string key in `STRATEGIES` (`register_strategy`), so a new one is one
class in one module. The engines are imported lazily: `deepspeed` is an optional extra.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import math
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import ClassVar, TypeVar

import torch
from torch import Tensor, nn

from atlas.config.schema import AtlasConfig
from atlas.distributed.ddp import maybe_no_sync, wrap_ddp
from atlas.distributed.env import DistInfo

log = logging.getLogger(__name__)

S = TypeVar("S", bound="type[Strategy]")

# training.strategy -> Strategy subclass, filled by @register_strategy when a module is imported.
STRATEGIES: dict[str, type[Strategy]] = {}
# Modules that register a strategy, imported on first use (deepspeed is not always installed).
_MODULES = {
    "ddp": "atlas.distributed.strategy",
    "fsdp2": "atlas.distributed.fsdp2",
    "deepspeed": "atlas.distributed.deepspeed_engine",
}


def register_strategy(name: str) -> Callable[[S], S]:
    """Class decorator: make `cls` the implementation of `training.strategy: <name>`."""

    def deco(cls: S) -> S:
        cls.name = name
        STRATEGIES[name] = cls
        return cls

    return deco


class Strategy:
    """DDP-like defaults for every hook; subclasses override what their engine does differently.

    `precision` is the resolved precision name of the run ("bf16" | "fp16" | "fp32", see
    atlas.runtime): FSDP2 derives its MixedPrecisionPolicy from it.
    """

    name: ClassVar[str] = ""
    # True: save_state/load_state write and read the model + optimizer state (sharded formats);
    # the checkpoint manager then leaves model.safetensors and optimizer.pt out of the checkpoint.
    owns_model_state: ClassVar[bool] = False
    # Python globals the files of save_state pickle besides tensors and plain data: the checkpoint
    # package admits these, and nothing else, when it reads or screens them (no code runs).
    pickle_globals: ClassVar[tuple[str, ...]] = ()
    # The file or folder of a checkpoint directory that holds this strategy's weights (its
    # save_state format); None: the checkpoint manager's own model.safetensors.
    weights_file: ClassVar[str | None] = None

    def __init__(self, cfg: AtlasConfig, dist: DistInfo, precision: str = "fp32") -> None:
        self.cfg, self.dist, self.precision = cfg, dist, precision
        self.optimizer: torch.optim.Optimizer | None = None  # set by prepare()

    # -- building ----------------------------------------------------------------------------

    def wrap(self, policy: nn.Module) -> nn.Module:
        """The module the trainer calls (`policy` already on `dist.device`)."""
        return policy

    def prepare(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> nn.Module:
        """Hook after the optimizer exists; returns the module to call from then on.

        The strategy keeps `optimizer`: its checkpoint hooks save and restore its state.
        """
        self.optimizer = optimizer
        return model

    def build_scaler(self, enabled: bool) -> torch.amp.GradScaler:
        """The loss scaler; `enabled` only for fp16 (a disabled one is a checkpointable no-op)."""
        return torch.amp.GradScaler(self.dist.device.type, enabled=enabled)

    # -- the train step ------------------------------------------------------------------------

    def zero_grad(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        optimizer.zero_grad(set_to_none=True)

    def micro_batch(self, model: nn.Module, last: bool) -> AbstractContextManager[None]:
        """Context around one micro-batch's forward + backward; `last` of the window."""
        return contextlib.nullcontext()

    def backward(self, model: nn.Module, loss: Tensor, scaler: torch.amp.GradScaler) -> None:
        """Backward of `loss` (already divided by the window length)."""
        scaler.scale(loss).backward()

    def optimizer_step(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler,
        params: Iterable[Tensor],
        max_norm: float | None,
    ) -> Tensor:
        """Unscale, clip to `max_norm` (None: measure only), step; returns the gradient norm."""
        scaler.unscale_(optimizer)  # no-op unless fp16: clip the true gradients
        norm = clip_grad_norm(params, max_norm)
        scaler.step(optimizer)
        scaler.update()
        return norm

    # -- evaluation, checkpoints, export -------------------------------------------------------

    def gathered(self, model: nn.Module) -> AbstractContextManager[None]:
        """Context in which ranks may run different numbers of forward passes (validation)."""
        return contextlib.nullcontext()

    def save_state(self, directory: Path, model: nn.Module) -> None:
        """Write the model + optimizer state into `directory` (only if `owns_model_state`).

        A collective: every rank calls it with the same `directory` (on a shared file system).
        """
        raise RuntimeError(f"{self.name} does not own the model state: the manager saves it")

    def load_state(self, directory: Path, model: nn.Module) -> None:
        """Restore what `save_state` wrote (only if `owns_model_state`); every rank calls it."""
        raise RuntimeError(f"{self.name} does not own the model state: the manager loads it")

    @classmethod
    def load_weights(cls, directory: Path, model: nn.Module) -> list[str]:
        """Weights only (checkpoint.load_from) from `directory/weights_file` into an unwrapped
        `model`, without the engine; returns the model keys the file lacks (the frozen ones)."""
        raise RuntimeError(f"{cls.name} does not own the model state: the manager loads it")

    def _prepared_optimizer(self) -> torch.optim.Optimizer:
        if self.optimizer is None:
            raise RuntimeError(f"{self.name}: call prepare(model, optimizer) before checkpointing")
        return self.optimizer

    def export_state_dict(self, model: nn.Module) -> dict[str, Tensor] | None:
        """Full, unsharded CPU weights on rank 0 (None elsewhere) for `save_pretrained`.

        None on rank 0 too means "the policy's own state_dict() is complete" (DDP, DeepSpeed
        ZeRO-2, which replicate the parameters). A collective where it is not None: call it on
        every rank.
        """
        return None


@register_strategy("ddp")
class DDPStrategy(Strategy):
    """DistributedDataParallel: replicated weights and optimizer, gradients all-reduced once per
    optimizer step (no_sync on every micro-batch but the last). Checkpoints: the manager's own
    model.safetensors + optimizer.pt (the state is the same on every rank)."""

    def wrap(self, policy: nn.Module) -> nn.Module:
        return wrap_ddp(policy, self.dist)

    def micro_batch(self, model: nn.Module, last: bool) -> AbstractContextManager[None]:
        return maybe_no_sync(model, skip_sync=not last)


def clip_grad_norm(params: Iterable[Tensor], max_norm: float | None) -> Tensor:
    """`clip_grad_norm_` that returns a plain tensor also for sharded (DTensor) gradients.

    FSDP2 gradients are DTensors; the norm torch computes over them is a replicated DTensor,
    which the trainer's meters would otherwise carry around. `max_norm=None` measures only.
    """
    limit = max_norm or math.inf  # None or 0: measure only, as training.max_grad_norm documents
    norm = torch.nn.utils.clip_grad_norm_(list(params), limit)
    full = getattr(norm, "full_tensor", None)
    return full() if callable(full) else norm


def available_strategies() -> list[str]:
    return sorted(_MODULES)


def strategy_class(name: str) -> type[Strategy]:
    """The class registered for `training.strategy: <name>` (its module imported on first use)."""
    if name not in STRATEGIES:
        importlib.import_module(_MODULES[name])
    return STRATEGIES[name]


def build_strategy(cfg: AtlasConfig, dist: DistInfo, precision: str = "fp32") -> Strategy:
    """The `Strategy` for `training.strategy`; imports its module (and engine) on first use."""
    name = cfg.training.strategy
    if name not in _MODULES:
        raise ValueError(
            f"training.strategy={name!r}: unknown (available: {', '.join(available_strategies())})"
        )
    strategy = strategy_class(name)(cfg, dist, precision)
    log.info("Parallelism strategy: %s (world size %d)", name, dist.world_size)
    return strategy


__all__ = [
    "STRATEGIES",
    "DDPStrategy",
    "Strategy",
    "available_strategies",
    "build_strategy",
    "clip_grad_norm",
    "register_strategy",
    "strategy_class",
]
