"""Checkpointing: one component that saves, finds, verifies and restores the whole training state.

The manager works over objects that save and restore their own state (`Stateful`: optimizer, LR
scheduler, GradScaler, `TrainProgress`, the sampler, `RNGState`). The run directory:

    <checkpoint.save_dir>/
      run.lock                     flock held by the run writing here (`lock`: one writer)
      last_checkpoint              name of the newest complete checkpoint (updated after it)
      iter_00001000/               every save_interval optimizer steps, at epoch ends (option),
        model.safetensors            on preemption and at the end; named by optimizer step
        optimizer.pt  scheduler.pt  scaler.pt  sampler.pt  progress.pt   one per Stateful
        rng.pt                     RNG states of EVERY rank: {"world_size", "ranks": [...]}
        meta.json                  step, epoch, position, best metric, effective batch, reason
        config.yaml                the resolved config of the run
        COMPLETE.json              written last: size + sha256 of every file above
      best/  final/                exported policies (`save_pretrained`: config.json,
                                   model.safetensors, normalization.json) + COMPLETE.json

Weights are safetensors; every `.pt` holds plain containers and tensors only and is read with
`torch.load(weights_only=True)`; before a resume, every pickle-based file of the checkpoint
(a strategy's own included) is screened by `unpickle`, so no file can run code.
`model.safetensors` holds the trainable parameters and all buffers. Frozen parameters
(pretrained backbones, gigabytes, never updated) are left out unless `checkpoint.save_frozen`;
they are rebuilt from their source on resume and checked against a fingerprint in meta.json, so
a changed backbone fails loudly. A sharded strategy (`Strategy.owns_model_state`: FSDP2,
DeepSpeed) writes the model and optimizer in its
own format into the same directory instead of model.safetensors and optimizer.pt.

Writes are atomic (`layout`): a temporary sibling directory, COMPLETE.json last, a rename,
then `last_checkpoint` (temp + rename), then retention (`max_keep_ckpts` newest iter_N; the
checkpoint of the best validation step and the one `last_checkpoint` names are never pruned).
Every rank calls every public method (they contain collectives); rank 0 writes the shared files.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import re
import time
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import save_file
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from atlas.checkpoint import layout
from atlas.checkpoint.compat import (
    BatchSplit,
    check_batch,
    log_config_changes,
    rebase_progress,
    seed_change,
    upgrade_optimizer_state,
)
from atlas.checkpoint.layout import CheckpointError, CorruptCheckpointError
from atlas.checkpoint.resume import load_weights, resolve_resume, run_on_rank0_and_broadcast
from atlas.checkpoint.state import Stateful, TrainProgress
from atlas.checkpoint.weights import (
    check_frozen,
    frozen_fingerprint,
    frozen_tensors,
    load_resume_weights,
    model_state,
)
from atlas.config.loader import save_config
from atlas.config.schema import AtlasConfig
from atlas.distributed.ddp import unwrap
from atlas.distributed.env import DistInfo, all_gather_object, barrier
from atlas.safeload import load_pt, screen

if TYPE_CHECKING:
    from atlas.distributed.strategy import Strategy

log = logging.getLogger(__name__)
_OBJ_NAME = re.compile(r"^[A-Za-z0-9_]+$")
_RESERVED = {"model", "meta", "config", "COMPLETE"}

__all__ = [
    "CheckpointError",
    "CheckpointManager",
    "CorruptCheckpointError",
    "SaveReason",
    "load_weights",
    "resolve_resume",
]


class SaveReason(Enum):
    """Why the loop offers a save; `CheckpointManager.save` decides whether one is due."""

    INTERVAL = "interval"  # every checkpoint.save_interval optimizer steps
    EPOCH_END = "epoch_end"  # with checkpoint.save_on_epoch_end
    PREEMPTION = "preemption"  # SIGTERM / SIGINT: always
    FINAL = "final"  # the run reached its last step: always


class CheckpointManager:
    """Save and restore the training state of one run (see module docstring).

    `model`: the policy (unwrapped or not); `states`: every other Stateful object, keyed by the
    name of its file (`optimizer` -> optimizer.pt), including a `TrainProgress` (its step names
    the checkpoints). `strategy`: the run's parallelism strategy; one that owns the model state
    (sharded formats) writes the model and optimizer itself.
    """

    def __init__(
        self,
        cfg: AtlasConfig,
        dist: DistInfo,
        model: nn.Module,
        states: dict[str, Stateful],
        strategy: Strategy | None = None,
    ) -> None:
        for name in states:
            if not _OBJ_NAME.match(name) or name in _RESERVED:
                raise ValueError(f"checkpoint object name {name!r}: use [A-Za-z0-9_], not reserved")
        progress = [s for s in states.values() if isinstance(s, TrainProgress)]
        if len(progress) != 1:
            raise ValueError("checkpoint states: exactly one TrainProgress is needed")
        self.cfg, self.dist, self.model, self.states = cfg, dist, model, dict(states)
        self.progress = progress[0]
        self.save_dir = Path(cfg.checkpoint.save_dir)
        self.strategy = strategy
        self._owner = strategy if strategy is not None and strategy.owns_model_state else None
        self._saved: dict[int, dict[str, Any]] = {}  # step -> progress, saves of this process

    # ------------------------------------------------------------------------------ resume

    def load(self, path: str | Path, *, verified: bool = False) -> None:
        """Restore the weights and every state from checkpoint `path` (`verified`: by
        `resolve_resume` already). Refuses a changed effective batch unless
        `checkpoint.allow_batch_change` (then the step is recomputed from the samples seen, see
        `compat`); an optimizer.pt of an earlier parameter layout is re-keyed to this one
        (`compat.upgrade_optimizer_state`). Every pickle-based file is screened first: none can
        run code. Every rank."""
        path = Path(path)
        extra = self._owner.pickle_globals if self._owner is not None else ()

        def check() -> None:
            if not verified:
                layout.verify(path)
            screen(path, extra)

        run_on_rank0_and_broadcast(self.dist, check)
        meta = layout.read_json(path / layout.META)
        old = BatchSplit.from_dict(meta["batch"])
        new = BatchSplit.of(self.cfg, self.dist.world_size)
        allow = self.cfg.checkpoint.allow_batch_change
        convert = check_batch(path, old, new, meta["progress"], allow)
        self._load_model(path, meta["model"])
        # The freshly built schedulers' peaks: the new config's, kept if the batch changed.
        states = self.states
        fresh_lrs = {n: list(o.base_lrs) for n, o in states.items() if isinstance(o, LRScheduler)}
        self._load_states(path, meta)
        if convert:
            rebase_progress(states, old, new, fresh_lrs)
        log_config_changes(path, self.cfg)
        p = meta["progress"]
        log.info(
            "Loaded checkpoint %s: step %d, epoch %d (%d micro-batches into it), %d samples seen",
            path,
            p["step"],
            p["epoch"],
            p["batch_in_epoch"],
            p["samples_seen"],
        )

    def _load_model(self, path: Path, info: dict[str, Any]) -> None:
        saved_by = info.get("owner")
        ours = self._owner.name if self._owner is not None else None
        if saved_by != ours:
            raise CheckpointError(
                f"{path} holds the model state of training.strategy={saved_by or 'ddp'}; this "
                f"run uses {self.cfg.training.strategy}. Resume with the same strategy, or start "
                f"from its weights with checkpoint.load_from: {path}"
            )
        policy = unwrap(self.model)
        if self._owner is not None:
            self._owner.load_state(path, self.model)  # a collective: every rank
        else:
            load_resume_weights(path, policy, info)
        if not info["frozen_saved"]:
            frozen = frozen_tensors(policy)
            check_frozen(path, info["frozen"], frozen, seed_change(path, self.cfg))

    def _load_states(self, path: Path, meta: dict[str, Any]) -> None:
        per_rank = set(meta.get("per_rank", []))
        for name, obj in self._own_states().items():
            file = path / f"{name}.pt"
            if not file.is_file():
                log.warning("%s has no %s: %s keeps its fresh state", path, file.name, name)
                continue
            state = load_pt(file)
            if name in per_rank:
                ranks = state["ranks"]
                if self.dist.rank >= len(ranks):  # a bigger world than the checkpoint's
                    log.warning("%s: no state for rank %d, it keeps its own", file, self.dist.rank)
                    continue
                state = ranks[self.dist.rank]
            try:
                if isinstance(obj, Optimizer):  # positions of an earlier parameter layout?
                    state = upgrade_optimizer_state(state, obj, unwrap(self.model))
                obj.load_state_dict(state)
            except (KeyError, ValueError, TypeError, IndexError, RuntimeError) as e:
                raise CheckpointError(f"{file} does not fit this run's {name}: {e}") from None

    # -------------------------------------------------------------------------------- save

    def save(self, step: int, reason: SaveReason) -> Path | None:
        """Save the state at optimizer step `step` if `reason` makes one due: every
        `save_interval` steps, at an epoch end with `save_on_epoch_end`, always on preemption and
        at the end. Writes iter_<step> atomically, updates last_checkpoint, prunes; returns the
        checkpoint (None when none was due). Call on every rank (collectives inside)."""
        if step != self.progress.step:
            raise ValueError(f"save(step={step}): the run's progress is at {self.progress.step}")
        if reason is SaveReason.INTERVAL:
            due = step > 0 and step % self.cfg.checkpoint.save_interval == 0
        elif reason is SaveReason.EPOCH_END:
            due = self.cfg.checkpoint.save_on_epoch_end
        else:
            due = True
        return self._write(reason) if due else None

    def _write(self, reason: SaveReason) -> Path:
        start, progress = time.perf_counter(), self.progress
        # Collectives first, in the same order on every rank: per-rank states to everyone.
        gathered = {
            name: all_gather_object(obj.state_dict())
            for name, obj in sorted(self.states.items())
            if getattr(obj, "per_rank_state", False)
        }
        target = self.save_dir / layout.ckpt_name(progress.step)
        tmp = run_on_rank0_and_broadcast(self.dist, lambda: self._begin(target))
        if tmp is None:
            return target  # this process saved this very state already (interval, then final)
        if self._owner is not None:
            self._owner.save_state(tmp, self.model)  # a collective: every rank writes its shards
            barrier()  # every shard is on disk before rank 0 checksums them
        run_on_rank0_and_broadcast(self.dist, lambda: self._finish(tmp, target, gathered, reason))
        log.info(
            "Saved checkpoint %s (%s, %.1fs)", target, reason.value, time.perf_counter() - start
        )
        run_on_rank0_and_broadcast(self.dist, lambda: self._prune(target))
        return target

    def _begin(self, target: Path) -> Path | None:
        if self._saved.get(self.progress.step) == self.progress.state_dict() and target.is_dir():
            return None
        layout.cleanup_stale(self.save_dir)
        tmp = self.save_dir / f".tmp-{target.name}-{os.getpid()}"
        tmp.mkdir(parents=True)
        return tmp

    def _finish(
        self, tmp: Path, target: Path, gathered: dict[str, list[Any]], reason: SaveReason
    ) -> None:
        """Rank 0: everything but the strategy's shards, the marker, the rename, the pointer."""
        policy = unwrap(self.model)
        save_frozen = self.cfg.checkpoint.save_frozen
        if self._owner is None:
            tensors, model_meta = model_state(policy, save_frozen)
            save_file(tensors, str(tmp / layout.MODEL), metadata={"format": "pt"})
        else:
            fingerprint = frozen_fingerprint(policy)
            model_meta = {
                "owner": self._owner.name,
                "frozen_saved": save_frozen,
                "frozen": fingerprint,
            }
        for name, obj in self._own_states().items():
            ranks = gathered.get(name)
            state = (
                obj.state_dict() if ranks is None else {"world_size": len(ranks), "ranks": ranks}
            )
            torch.save(state, tmp / f"{name}.pt")
        save_config(self.cfg, tmp / layout.CONFIG)
        meta = self._meta(reason, model_meta, sorted(gathered))
        (tmp / layout.META).write_text(json.dumps(meta, indent=1))
        layout.write_marker(tmp, extra={"step": self.progress.step})
        layout.replace_dir(tmp, target)
        layout.write_last(self.save_dir, target)
        self._saved[self.progress.step] = self.progress.state_dict()

    def _meta(
        self, reason: SaveReason, model_meta: dict[str, Any], per_rank: list[str]
    ) -> dict[str, Any]:
        prog = self.progress.state_dict()
        if prog["best_val_loss"] == float("inf"):
            prog["best_val_loss"] = None  # strict JSON has no Infinity
        return {
            "format_version": layout.FORMAT_VERSION,
            "step": self.progress.step,
            "epoch": self.progress.epoch,
            "reason": reason.value,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "progress": prog,
            "batch": BatchSplit.of(self.cfg, self.dist.world_size).to_dict(),
            "model": model_meta,
            "per_rank": per_rank,
            "torch": torch.__version__,
        }

    def _prune(self, current: Path) -> None:
        """Keep the newest `max_keep_ckpts` up to `current`, plus best and last; delete the rest.
        Checkpoints newer than `current` (an abandoned timeline) are left alone."""
        keep = self.cfg.checkpoint.max_keep_ckpts
        progress = self.progress
        listed = layout.list_checkpoints(self.save_dir)
        older = [c for c in listed if (layout.step_of(c) or 0) <= progress.step]
        protected = {current.name}
        if progress.best_step >= 0:
            protected.add(layout.ckpt_name(progress.best_step))
        last = layout.read_last(self.save_dir)
        if last is not None:
            protected.add(last.name)
        for victim in older[: max(0, len(older) - keep)]:
            if victim.name not in protected:
                log.info("Removing old checkpoint %s (checkpoint.max_keep_ckpts=%d)", victim, keep)
                layout.remove_dir(victim)

    def _own_states(self) -> dict[str, Stateful]:
        """The states the manager writes itself: all but a sharded strategy's optimizer."""
        owned = getattr(self._owner, "optimizer", None)
        return {n: obj for n, obj in self.states.items() if owned is None or obj is not owned}

    # ------------------------------------------------------------------------------ export

    def export(self, dir_name: str) -> Path:
        """`<save_dir>/<dir_name>` (best/, final/) via `policy.save_pretrained`, atomically."""
        # Sharded strategies gather the full weights first: a collective on every rank.
        full = self.strategy.export_state_dict(self.model) if self.strategy is not None else None
        return run_on_rank0_and_broadcast(self.dist, lambda: self._write_export(dir_name, full))

    def _write_export(self, dir_name: str, full: dict[str, torch.Tensor] | None) -> Path:
        target = self.save_dir / dir_name
        tmp = self.save_dir / f".tmp-{dir_name}-{os.getpid()}"
        policy = unwrap(self.model)
        if not hasattr(policy, "save_pretrained"):  # a plain nn.Module (tests)
            tmp.mkdir(parents=True)
            save_file(model_state(policy, save_frozen=True)[0], str(tmp / layout.MODEL))
            save_config(self.cfg, tmp / layout.CONFIG)
        elif full is None:
            policy.save_pretrained(tmp)
        elif "state_dict" in inspect.signature(policy.save_pretrained).parameters:
            policy.save_pretrained(tmp, state_dict=full)
        else:
            raise CheckpointError(
                "export: the policy's save_pretrained cannot take the gathered weights of "
                f"training.strategy={self.cfg.training.strategy} (needs a state_dict argument)"
            )
        layout.write_marker(tmp, extra={"kind": "export"})
        layout.replace_dir(tmp, target)
        log.info("Exported the policy to %s", target)
        return target
