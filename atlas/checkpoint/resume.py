"""Where a run starts from: `checkpoint.resume` (PATH | auto) and `checkpoint.load_from` (weights).

Both are decided before the trainer builds its optimizer (weights are loaded into the plain
policy, before a strategy wraps or shards it), so they are functions, not manager methods.
Every rank calls them; rank 0 reads the disk and broadcasts what it found to the others
(`run_on_rank0_and_broadcast`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from torch import nn

from atlas.checkpoint import layout
from atlas.checkpoint.layout import CheckpointError
from atlas.checkpoint.weights import load_weights_only, strategy_weights, weights_names
from atlas.config.schema import AtlasConfig
from atlas.distributed.ddp import unwrap
from atlas.distributed.env import DistInfo, broadcast_object
from atlas.safeload import screen

log = logging.getLogger(__name__)
T = TypeVar("T")


def resolve_resume(cfg: AtlasConfig, dist: DistInfo) -> Path | None:
    """The verified checkpoint to resume from per `checkpoint.resume`: None, "auto" or a PATH.

    auto: the one `last_checkpoint` names; if that is incomplete or corrupt (or the pointer is
    unusable), the newest complete iter_N (said in the log); None when there is none (a fresh
    start, said too). PATH: that checkpoint, verified (a run directory: its newest complete one).
    Leftovers of interrupted saves are removed first: call it holding the run's lock.
    """
    spec = cfg.checkpoint.resume
    if spec is None:
        return None
    return run_on_rank0_and_broadcast(dist, lambda: _resolve(spec, Path(cfg.checkpoint.save_dir)))


def _resolve(spec: str, save_dir: Path) -> Path | None:
    layout.cleanup_stale(save_dir)
    if spec == "auto":
        path = layout.newest_complete(save_dir)
        if path is None:
            log.info("No complete checkpoint in %s: starting from scratch.", save_dir)
        else:
            log.info("Auto resumed from the latest checkpoint %s.", path)
        return path
    given = Path(spec)
    if not given.exists():
        raise CheckpointError(
            f"checkpoint.resume: {given} does not exist (give an iter_N directory, a run "
            f"directory, or 'auto' for the newest checkpoint in {save_dir})"
        )
    if not given.is_dir():
        raise CheckpointError(
            f"checkpoint.resume: {given} is a file; give an iter_N directory or a run directory"
        )
    is_run_dir = (given / layout.LAST).exists() or layout.list_checkpoints(given)
    if not (given / layout.MARKER).exists() and is_run_dir:
        path = layout.newest_complete(given)
        if path is None:
            raise CheckpointError(f"checkpoint.resume: no complete checkpoint in {given}")
    else:
        layout.verify(given)
        path = given
    log.info("Resuming from checkpoint %s.", path)
    return path


def load_weights(path: str | Path, model: nn.Module, dist: DistInfo | None = None) -> None:
    """`checkpoint.load_from` (and `atlas eval`): weights only, from an iter_N directory, an
    export (best/, final/), a run directory (its newest checkpoint) or a .safetensors file.
    Optimizer, schedule and counters stay fresh; mismatched keys are skipped and reported."""
    source = run_on_rank0_and_broadcast(dist or DistInfo(), lambda: _weights_source(Path(path)))
    load_weights_only(source, unwrap(model))


def _weights_source(path: Path) -> Path:
    """The verified weights of `path`; a folder with any file that could run code is refused,
    whichever of its files this load would read (nobody is to trust it afterwards either)."""
    source = layout.weights_source(path, weights_names())
    if source.is_dir():
        owner = strategy_weights(source)
        screen(source, owner.pickle_globals if owner is not None else ())
    return source


def run_on_rank0_and_broadcast(dist: DistInfo, fn: Callable[[], T]) -> T:
    """A collective: EVERY rank must call it, at the same point. Rank 0 runs `fn`; its result
    (which must pickle) is broadcast, so every rank returns the same value. If `fn` raises on
    rank 0, rank 0 raises that exception and every other rank a CheckpointError with its message
    (sent as text: an exception need not pickle), so all ranks fail together instead of the
    others waiting in the next collective.

    A rank that skips the call leaves the others blocked in the broadcast; `fn` itself must not
    call collectives (only rank 0 runs it). Single process: just `fn()`.
    """
    value: Any = None
    error: BaseException | None = None
    if dist.is_main:
        try:
            value = fn()
        except Exception as e:  # re-raised below, after the other ranks heard about it
            error = e
    if dist.distributed:
        message = None if error is None else f"{type(error).__name__}: {error}"
        value, message = broadcast_object((value, message))
        if error is None and message is not None:
            raise CheckpointError(f"on rank 0: {message}")
    if error is not None:
        raise error
    return value
