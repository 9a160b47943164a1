"""Checkpointing: one component that saves, finds, verifies and restores the whole training state.

The manager works over objects that save and restore their own state (`Stateful`: optimizer, LR
scheduler, GradScaler, `TrainProgress`, the sampler, `RNGState`). The run directory:

    <checkpoint.save_dir>/
      last_checkpoint              path of the newest complete checkpoint (updated after it)
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
`torch.load(weights_only=True)` (no arbitrary pickle). `model.safetensors` holds the trainable
parameters and all buffers. Frozen parameters (pretrained backbones, gigabytes, never updated)
are left out unless `checkpoint.save_frozen`; they are rebuilt from their source on resume and
checked against a fingerprint in meta.json, so a changed backbone fails loudly. A sharded
strategy (`Strategy.owns_model_state`: FSDP2, DeepSpeed) writes the model and optimizer in its
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
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import torch
from safetensors.torch import save_file
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

from atlas.checkpoint import layout
from atlas.checkpoint.compat import BatchSplit, check_batch, log_config_changes, rebase_progress
from atlas.checkpoint.layout import CheckpointError, CorruptCheckpointError
from atlas.checkpoint.state import Stateful, TrainProgress
from atlas.checkpoint.weights import (
    check_frozen,
    frozen_fingerprint,
    frozen_keys,
    load_resume_weights,
    load_weights_only,
    model_state,
)
from atlas.config.loader import save_config
from atlas.config.schema import AtlasConfig
from atlas.distributed.ddp import unwrap
from atlas.distributed.env import DistInfo, all_gather_object, barrier, broadcast_object

if TYPE_CHECKING:
    from atlas.distributed.strategy import Strategy

log = logging.getLogger(__name__)
T = TypeVar("T")
_OBJ_NAME = re.compile(r"^[A-Za-z0-9_]+$")
_RESERVED = {"model", "meta", "config", "COMPLETE"}

__all__ = ["CheckpointError", "CheckpointManager", "CorruptCheckpointError"]


class CheckpointManager:
    """Save, find and restore training state in `cfg.checkpoint.save_dir` (see module docstring).

    `strategy`: the run's parallelism strategy; only one that owns the model state (sharded
    formats) changes what is written. The trainer passes its policy (unwrapped or not) as `model`.
    """

    def __init__(self, cfg: AtlasConfig, dist: DistInfo, strategy: Strategy | None = None) -> None:
        self.cfg = cfg
        self.dist = dist
        self.save_dir = Path(cfg.checkpoint.save_dir)
        self.strategy = strategy
        self._owner = strategy if strategy is not None and strategy.owns_model_state else None
        self._verified: set[Path] = set()  # checked by this process: load() need not hash again
        self._saved: dict[int, dict[str, Any]] = {}  # step -> progress, saves of this process

    # ------------------------------------------------------------------------------ resume

    def resolve_resume(self) -> Path | None:
        """The checkpoint to resume from per `checkpoint.resume`: None, "auto" or a PATH.

        auto: the one `last_checkpoint` names; if that is incomplete or corrupt, the newest older
        complete one (said in the log); None when there is none (a fresh start, said too).
        PATH: that checkpoint, verified (a run directory means its newest complete checkpoint).
        """
        spec = self.cfg.checkpoint.resume
        if spec is None:
            return None
        path = self._on_main(lambda: self._resolve(spec))
        if path is not None:
            self._verified.add(path)
        return path

    def _resolve(self, spec: str) -> Path | None:
        layout.cleanup_stale(self.save_dir)
        if spec == "auto":
            path = layout.newest_complete(self.save_dir)
            if path is None:
                log.info("No complete checkpoint in %s: starting from scratch.", self.save_dir)
            else:
                log.info("Auto resumed from the latest checkpoint %s.", path)
            return path
        given = Path(spec)
        if not given.exists():
            raise CheckpointError(
                f"checkpoint.resume: {given} does not exist (give an iter_N directory, a run "
                f"directory, or 'auto' for the newest checkpoint in {self.save_dir})"
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

    def load(self, path: str | Path, model: nn.Module, objects: dict[str, Stateful]) -> None:
        """Restore weights and every object in `objects` (keys = file names) from `path`.

        Refuses a changed effective batch unless `checkpoint.allow_batch_change` (then the step is
        recomputed from the samples seen, see `compat`). Call on every rank.
        """
        path = Path(path)
        if path not in self._verified:
            self._on_main(lambda: layout.verify(path))
        meta = layout.read_json(path / layout.META)
        old = BatchSplit.from_dict(meta["batch"])
        new = BatchSplit.of(self.cfg, self.dist.world_size)
        allow = self.cfg.checkpoint.allow_batch_change
        convert = check_batch(path, old, new, meta["progress"], allow)
        self._load_model(path, model, meta["model"])
        # The freshly built schedulers' peaks: the new config's, kept if the batch changed.
        fresh_lrs = {n: list(o.base_lrs) for n, o in objects.items() if isinstance(o, LRScheduler)}
        self._load_objects(path, objects, meta)
        if convert:
            rebase_progress(objects, old, new, fresh_lrs)
        log_config_changes(path, self.cfg)
        p = meta["progress"]
        log.info(
            "Loaded checkpoint %s: step %d, epoch %d (%d micro-batches into it), %d samples seen",
            path, p["step"], p["epoch"], p["batch_in_epoch"], p["samples_seen"],
        )  # fmt: skip

    def _load_model(self, path: Path, model: nn.Module, info: dict[str, Any]) -> None:
        saved_by = info.get("owner")
        ours = self._owner.name if self._owner is not None else None
        if saved_by != ours:
            raise CheckpointError(
                f"{path} holds the model state of training.strategy={saved_by or 'ddp'}; this "
                f"run uses {self.cfg.training.strategy}. Resume with the same strategy, or start "
                f"from its weights with checkpoint.load_from: {path}"
            )
        policy = unwrap(model)
        if self._owner is not None:
            self._owner.load_state(path, model)  # a collective: every rank
        else:
            load_resume_weights(path, policy, info)
        if not info["frozen_saved"]:
            check_frozen(path, info["frozen"], frozen_fingerprint(policy, frozen_keys(policy)))

    def _load_objects(self, path: Path, objects: dict[str, Stateful], meta: dict[str, Any]) -> None:
        per_rank = set(meta.get("per_rank", []))
        for name, obj in self._own_objects(objects).items():
            file = path / f"{name}.pt"
            if not file.is_file():
                log.warning("%s has no %s: %s keeps its fresh state", path, file.name, name)
                continue
            state = torch.load(file, map_location="cpu", weights_only=True)
            if name in per_rank:
                ranks = state["ranks"]
                if self.dist.rank >= len(ranks):  # a bigger world than the checkpoint's
                    log.warning("%s: no state for rank %d, it keeps its own", file, self.dist.rank)
                    continue
                state = ranks[self.dist.rank]
            obj.load_state_dict(state)

    def load_weights(self, path: str | Path, model: nn.Module) -> None:
        """`checkpoint.load_from`: weights only, from an iter_N directory, an export (best/,
        final/), a run directory (its newest checkpoint) or a .safetensors file. Optimizer,
        schedule and counters stay fresh; mismatched keys are skipped and reported. Every rank."""
        source = self._on_main(lambda: layout.weights_source(Path(path)))
        load_weights_only(source, unwrap(model))

    # -------------------------------------------------------------------------------- save

    def maybe_save(
        self,
        progress: TrainProgress,
        model: nn.Module,
        objects: dict[str, Stateful],
        *,
        force: bool = False,
        reason: str = "interval",
    ) -> Path | None:
        """Save if due: every `save_interval` steps, at an epoch end with `save_on_epoch_end`
        (reason="epoch_end"), or when forced ("preemption", "final"). Call on every rank."""
        if force:
            due = True
        elif reason == "epoch_end":
            due = self.cfg.checkpoint.save_on_epoch_end
        else:
            due = progress.step > 0 and progress.step % self.cfg.checkpoint.save_interval == 0
        return self.save(progress, model, objects, reason=reason) if due else None

    def save(
        self,
        progress: TrainProgress,
        model: nn.Module,
        objects: dict[str, Stateful],
        *,
        reason: str,
    ) -> Path:
        """Write iter_<step> atomically, update last_checkpoint, prune. Call on every rank."""
        start = time.perf_counter()
        objects = {"progress": progress, **objects}
        for name in objects:
            if not _OBJ_NAME.match(name) or name in _RESERVED:
                raise ValueError(f"checkpoint object name {name!r}: use [A-Za-z0-9_], not reserved")
        # Collectives first, in the same order on every rank: per-rank states to everyone.
        gathered = {
            name: all_gather_object(obj.state_dict())
            for name, obj in sorted(objects.items())
            if getattr(obj, "per_rank_state", False)
        }
        target = self.save_dir / layout.ckpt_name(progress.step)
        tmp = self._on_main(lambda: self._begin(progress, target))
        if tmp is None:
            return target  # this process saved this very state already (interval, then final)
        if self._owner is not None:
            self._owner.save_state(tmp, model)  # a collective: every rank writes its shards
            barrier()  # every shard is on disk before rank 0 checksums them
        self._on_main(lambda: self._finish(tmp, target, progress, model, objects, gathered, reason))
        log.info("Saved checkpoint %s (%s, %.1fs)", target, reason, time.perf_counter() - start)
        self._on_main(lambda: self._prune(progress, target))
        return target

    def _begin(self, progress: TrainProgress, target: Path) -> Path | None:
        if self._saved.get(progress.step) == progress.state_dict() and target.is_dir():
            return None
        layout.cleanup_stale(self.save_dir)
        tmp = self.save_dir / f".tmp-{target.name}-{os.getpid()}"
        tmp.mkdir(parents=True)
        return tmp

    def _finish(
        self,
        tmp: Path,
        target: Path,
        progress: TrainProgress,
        model: nn.Module,
        objects: dict[str, Stateful],
        gathered: dict[str, list[Any]],
        reason: str,
    ) -> None:
        """Rank 0: everything but the strategy's shards, the marker, the rename, the pointer."""
        policy = unwrap(model)
        save_frozen = self.cfg.checkpoint.save_frozen
        if self._owner is None:
            tensors, model_meta = model_state(policy, save_frozen)
            save_file(tensors, str(tmp / layout.MODEL), metadata={"format": "pt"})
        else:
            fingerprint = frozen_fingerprint(policy, frozen_keys(policy))
            model_meta = {"owner": self._owner.name, "frozen_saved": save_frozen,
                          "frozen": fingerprint}  # fmt: skip
        for name, obj in self._own_objects(objects).items():
            ranks = gathered.get(name)
            state = (
                obj.state_dict() if ranks is None else {"world_size": len(ranks), "ranks": ranks}
            )
            torch.save(state, tmp / f"{name}.pt")
        save_config(self.cfg, tmp / layout.CONFIG)
        meta = self._meta(progress, reason, model_meta, sorted(gathered))
        (tmp / layout.META).write_text(json.dumps(meta, indent=1))
        layout.write_marker(tmp, extra={"step": progress.step})
        layout.replace_dir(tmp, target)
        layout.write_last(self.save_dir, target)
        self._saved[progress.step] = progress.state_dict()

    def _meta(
        self, progress: TrainProgress, reason: str, model_meta: dict[str, Any], per_rank: list[str]
    ) -> dict[str, Any]:
        prog = progress.state_dict()
        if prog["best_val_loss"] == float("inf"):
            prog["best_val_loss"] = None  # strict JSON has no Infinity
        return {
            "format_version": layout.FORMAT_VERSION,
            "step": progress.step,
            "epoch": progress.epoch,
            "reason": reason,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "progress": prog,
            "batch": BatchSplit.of(self.cfg, self.dist.world_size).to_dict(),
            "model": model_meta,
            "per_rank": per_rank,
            "torch": torch.__version__,
        }

    def _prune(self, progress: TrainProgress, current: Path) -> None:
        """Keep the newest `max_keep_ckpts` up to `current`, plus best and last; delete the rest.
        Checkpoints newer than `current` (an abandoned timeline) are left alone."""
        keep = self.cfg.checkpoint.max_keep_ckpts
        step = progress.step
        older = [
            c for c in layout.list_checkpoints(self.save_dir) if (layout.step_of(c) or 0) <= step
        ]
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

    def _own_objects(self, objects: dict[str, Stateful]) -> dict[str, Stateful]:
        """The objects the manager writes itself: all but a sharded strategy's optimizer."""
        owned = getattr(self._owner, "optimizer", None)
        return {name: obj for name, obj in objects.items() if owned is None or obj is not owned}

    # ------------------------------------------------------------------------------ export

    def export(self, model: nn.Module, dir_name: str) -> Path:
        """`<save_dir>/<dir_name>` (best/, final/) via `policy.save_pretrained`, atomically."""
        # Sharded strategies gather the full weights first: a collective on every rank.
        full = self.strategy.export_state_dict(model) if self.strategy is not None else None

        def write() -> Path:
            target = self.save_dir / dir_name
            tmp = self.save_dir / f".tmp-{dir_name}-{os.getpid()}"
            policy = unwrap(model)
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

        return self._on_main(write)

    # --------------------------------------------------------------------------- internals

    def _on_main(self, fn: Callable[[], T]) -> T:
        """Run `fn` on rank 0 only; every rank gets its result, or raises if it failed."""
        value: Any = None
        error: BaseException | None = None
        if self.dist.is_main:
            try:
                value = fn()
            except Exception as e:  # re-raised below, after the other ranks heard about it
                error = e
        if self.dist.distributed:
            message = None if error is None else f"{type(error).__name__}: {error}"
            value, message = broadcast_object((value, message))
            if error is None and message is not None:
                raise CheckpointError(f"on rank 0: {message}")
        if error is not None:
            raise error
        return value
