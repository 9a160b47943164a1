"""FSDP2 (`torch.distributed.fsdp.fully_shard`) for the single-device policy, and its checkpoints.

Wrapping (torchtitan's `parallelize` recipe, applied from outside the model code):

    1. units   = the items of every outermost nn.ModuleList that hold trainable parameters
                 (VGGT aggregator blocks, language-model layers, fusion layers)
    2. optional activation checkpointing of each unit (`training.fsdp.activation_checkpointing`)
    3. fully_shard(unit) for every unit, in bf16/fp16 compute when the run's precision says so
    4. fully_shard(policy)            the root: everything else (embeddings, heads, tokens), fp32

FSDP gathers a module's shards in its forward pre-hook, so only modules that are CALLED can be
units. Blocks always are; the top-level modules are not (the policy reaches VGGT through
`vggt.aggregator`, never `vggt(...)`), so everything outside the blocks belongs to the root,
whose forward (`policy(batch)`; `predict_chunk` and `evaluate_batch`, registered below)
starts every pass.

Frozen parameters are NOT sharded (`ignored_params`): they stay replicated as under DDP. The
frozen language encoder runs only on a per-rank cache miss, and a sharded module whose forward
runs on some ranks only would wait forever in its all-gather.

`reshard_after_forward=False` keeps the gathered parameters from forward to backward (one
all-gather per step: ZeRO-2-like, more memory); `True` frees them after forward and gathers again
in backward (ZeRO-3-like, the least memory). Gradients are reduce-scattered in fp32 on every
micro-batch: skipping the sync during accumulation would hold unsharded gradients, which is the
memory sharding exists to save.

Checkpoints go through `torch.distributed.checkpoint` (DCP): every rank writes its own shard into
`<iter_N>/dcp/`, rank 0 writes `.metadata` last (DCP's own completion marker), and a checkpoint
written by N ranks loads on M ranks (DCP reshards on load), including a single process.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import warnings
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
import torch.utils.checkpoint
from torch import Tensor, nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_state_dict,
)
from torch.distributed.fsdp import (
    FSDPModule,
    MixedPrecisionPolicy,
    fully_shard,
    register_fsdp_forward_method,
)
from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler

from atlas.config.schema import FSDPConfig
from atlas.distributed.strategy import Strategy, register_strategy
from atlas.safeload import SafeFileSystemReader, SafeLoadPlanner

log = logging.getLogger(__name__)

DCP_DIR = "dcp"  # sub-directory of an iter_N checkpoint holding the DCP shards
DCP_MARKER = ".metadata"  # written by DCP after every shard: the DCP part is complete
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# Methods the trainer / evaluator call besides forward that run sharded submodules.
_FORWARD_METHODS = ("predict_chunk", "evaluate_batch")


def mixed_precision(precision: str) -> MixedPrecisionPolicy:
    """The sharded blocks' policy: gather + compute in the run's low precision, fp32 elsewhere.

    Gradients are reduced in fp32 (summing many bf16 shards loses bits). Block outputs are cast
    back to fp32 so the code between blocks sees the dtypes it sees under plain autocast
    (residual stream fp32; VGGT's heads run with autocast off and expect fp32).
    """
    dtype = _DTYPES.get(precision)
    if dtype is None:
        return MixedPrecisionPolicy()
    return MixedPrecisionPolicy(
        param_dtype=dtype, reduce_dtype=torch.float32, output_dtype=torch.float32
    )


def _trainable(module: nn.Module) -> bool:
    return any(p.requires_grad for p in module.parameters())


def shard_units(model: nn.Module) -> list[str]:
    """Names of the items of outermost ModuleLists that hold trainable parameters (step 1)."""
    units: list[str] = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList):
            continue
        if any(name == u or name.startswith(u + ".") for u in units):
            continue  # inside a unit already: nested lists stay part of their block
        prefix = f"{name}." if name else ""
        units += [f"{prefix}{i}" for i, item in enumerate(module) if _trainable(item)]
    return units


def _checkpoint_units(model: nn.Module, units: list[str]) -> None:
    """Recompute each unit's activations in backward (step 2), keeping every parameter name.

    torch's `checkpoint_wrapper` would insert a `_checkpoint_wrapped_module.` level into
    named_parameters(), which the optimizer groups and the checkpoint's frozen-key bookkeeping
    read; wrapping the unit's forward in `torch.utils.checkpoint` changes no name. FSDP's hooks
    run around it (in __call__), as they do around torchtitan's wrapper.
    """
    for name in units:
        module = model.get_submodule(name)
        module.forward = functools.partial(_checkpointed, module.forward)  # type: ignore[method-assign]


def _checkpointed(forward: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return torch.utils.checkpoint.checkpoint(forward, *args, use_reentrant=False, **kwargs)


def apply_fsdp2(model: nn.Module, fsdp_cfg: FSDPConfig, precision: str) -> nn.Module:
    """Shard `model` in place (steps 1-4 of the module docstring); returns it.

    Needs an initialized process group; the default mesh spans every rank on `model`'s device
    type (CUDA + NCCL on GPUs, CPU + gloo otherwise).
    """
    frozen = {p for p in model.parameters() if not p.requires_grad}
    units = shard_units(model)
    if fsdp_cfg.activation_checkpointing:
        _checkpoint_units(model, units)
    reshard = fsdp_cfg.reshard_after_forward
    block_mp = mixed_precision(precision)
    for name in units:
        fully_shard(
            model.get_submodule(name),
            reshard_after_forward=reshard,
            mp_policy=block_mp,
            ignored_params=frozen,
        )
    # The root (fp32 parameters, autocast: it holds the numerically sensitive heads) keeps its
    # gathered parameters until backward, which would gather them again right away.
    fully_shard(model, reshard_after_forward=False, ignored_params=frozen)
    for method in _FORWARD_METHODS:
        if hasattr(model, method):
            register_fsdp_forward_method(model, method)
    sharded = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log.info(
        "FSDP2: %d blocks + root sharded over %d ranks (%d trainable params, %s, "
        "reshard_after_forward=%s, activation checkpointing %s); %d frozen params replicated",
        len(units),
        dist.get_world_size(),
        sharded,
        precision,
        reshard,
        fsdp_cfg.activation_checkpointing,
        sum(p.numel() for p in frozen),
    )
    return model


@contextlib.contextmanager
def gathered_params(model: nn.Module, reshard_after_forward: bool) -> Iterator[None]:
    """All-gather every shard once, run the body without collectives, reshard at the end.

    Validation gives ranks unequal numbers of batches (the held-out set is split without
    padding); a sharded forward is a collective, so the rank with one batch more would wait
    forever. With everything gathered and resharding off, a forward needs no other rank.
    `reshard_after_forward` is the configured value, restored afterwards (the root keeps False).
    """
    modules = [m for m in model.modules() if isinstance(m, FSDPModule)]
    for m in modules:
        m.set_reshard_after_forward(False, recurse=False)
        m.unshard()
    try:
        yield
    finally:
        for m in modules:
            m.reshard()
            m.set_reshard_after_forward(reshard_after_forward and m is not model, recurse=False)


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


@contextlib.contextmanager
def _single_process_ok() -> Iterator[None]:
    """Silence DCP's warning that it loads in one process: here that is the intent."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def _options(save_frozen: bool) -> StateDictOptions:
    return StateDictOptions(ignore_frozen_params=not save_frozen)


def _saved_keys(directory: Path) -> set[str]:
    return set(SafeFileSystemReader(str(directory)).read_metadata().state_dict_metadata)


def _dcp_load(state: dict[str, Any], directory: Path) -> None:
    """dcp.load through the restricted readers: DCP's own unpickle .metadata and its non-tensor
    items without restriction, so a crafted checkpoint would run code (atlas.safeload).
    """
    with _single_process_ok():
        dcp.load(
            state,
            storage_reader=SafeFileSystemReader(str(directory)),
            planner=SafeLoadPlanner(directory),
            no_dist=not _distributed(),
        )


def save_sharded(
    directory: Path, model: nn.Module, optimizer: torch.optim.Optimizer, save_frozen: bool = False
) -> None:
    """DCP save of {"model", "optimizer"} into `directory` (every rank writes its shards).

    Frozen parameters are left out unless `save_frozen` (like the DDP checkpoint): they are
    rebuilt from their source on resume.
    """
    model_sd, optim_sd = get_state_dict(model, optimizer, options=_options(save_frozen))
    state = {"model": model_sd, "optimizer": optim_sd}
    dcp.save(state, checkpoint_id=str(directory), no_dist=not _distributed())


def load_sharded(directory: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Restore a `save_sharded` checkpoint, resharding it to this job's world size.

    Frozen parameters are restored too when the checkpoint has them (`save_frozen`).
    """
    if not (directory / DCP_MARKER).is_file():
        raise FileNotFoundError(f"{directory}: no DCP {DCP_MARKER} (the save never finished)")
    saved = _saved_keys(directory)
    # Plain metadata reads, no communication: every rank decides the same.
    with_frozen = get_model_state_dict(model, options=_options(save_frozen=True))
    opts = _options(save_frozen=all(f"model.{k}" in saved for k in with_frozen))
    model_sd, optim_sd = get_state_dict(model, optimizer, options=opts)
    missing = [k for k in model_sd if f"model.{k}" not in saved]
    if missing:
        raise KeyError(f"{directory}: the checkpoint lacks trainable weights {missing[:8]}")
    state = {"model": model_sd, "optimizer": optim_sd}
    _dcp_load(state, directory)  # fills `state` in place, each rank its own shards
    # strict=False: frozen weights may be absent on purpose; trainable ones were checked above.
    opts = StateDictOptions(ignore_frozen_params=opts.ignore_frozen_params, strict=False)
    set_state_dict(
        model,
        optimizer,
        model_state_dict=state["model"],
        optim_state_dict=state["optimizer"],
        options=opts,
    )


def load_model_weights(directory: Path, model: nn.Module) -> list[str]:
    """Weights only (checkpoint.load_from) from a DCP checkpoint into an unsharded `model`.

    Returns the model keys the checkpoint did not have (frozen ones, normally).
    """
    saved = _saved_keys(directory)
    own = model.state_dict()
    wanted = {k: v for k, v in own.items() if f"model.{k}" in saved}
    _dcp_load({"model": wanted}, directory)
    model.load_state_dict(wanted, strict=False)
    return sorted(set(own) - set(wanted))


def full_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """Every weight unsharded on the CPU of rank 0 ({} elsewhere). A collective."""
    return get_model_state_dict(
        model, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
    )


@register_strategy("fsdp2")
class FSDP2Strategy(Strategy):
    """Fully sharded data parallel (FSDP2) with DCP checkpoints; see the module docstring.

    In a world of one there is nothing to shard: the policy runs unwrapped, and checkpoints still
    go through DCP, so a multi-rank checkpoint resumes in one process and vice versa.
    """

    owns_model_state = True
    weights_file = DCP_DIR

    @classmethod
    def load_weights(cls, directory: Path, model: nn.Module) -> list[str]:
        return load_model_weights(directory / DCP_DIR, model)

    def wrap(self, policy: nn.Module) -> nn.Module:
        if not _distributed():
            log.info("FSDP2 in a single process: nothing to shard, the policy runs unwrapped")
            return policy
        return apply_fsdp2(policy, self.cfg.training.fsdp, self.precision)

    def build_scaler(self, enabled: bool) -> torch.amp.GradScaler:
        # Each rank sees only its gradient shard: the inf/nan check must be all-reduced, or one
        # rank would skip a step the others take. One process: nothing is sharded.
        if not _distributed():
            return super().build_scaler(enabled)
        return ShardedGradScaler(device=self.dist.device.type, enabled=enabled)

    def gathered(self, model: nn.Module) -> AbstractContextManager[None]:
        return gathered_params(model, self.cfg.training.fsdp.reshard_after_forward)

    def save_state(self, directory: Path, model: nn.Module) -> None:
        optimizer = self._prepared_optimizer()
        save_sharded(directory / DCP_DIR, model, optimizer, self.cfg.checkpoint.save_frozen)

    def load_state(self, directory: Path, model: nn.Module) -> None:
        load_sharded(directory / DCP_DIR, model, self._prepared_optimizer())

    def export_state_dict(self, model: nn.Module) -> dict[str, Tensor] | None:
        return full_state_dict(model)
