"""Does a checkpoint fit the run resuming from it? The batch split (below) and the config (logged).

The step counter counts optimizer steps, and the LR schedule is a function of it. One step means
`effective batch = per-device batch x world size x accumulation` samples, so:

* same effective batch, different split (e.g. half the per-device batch, twice the accumulation
  to fit memory): a step still means the same amount of data. Resume; only the position inside
  the epoch (counted in micro-batches) is converted.
* different effective batch: step N no longer means N x old samples, and the schedule would
  continue at the wrong point. Refused unless `checkpoint.allow_batch_change: true`; then the
  step is recomputed from the samples already seen (`step' = samples_seen // new_effective`), the
  schedule continues from there, and the peak LRs follow the new config (lr scaling by world).

Checkpoints of an earlier parameter layout (two GeometryEncoder parameters that are now the rows
of one, `atlas.models.geometry.EARLIER_PARAMETERS`): the weights are renamed as they load
(`upgrade_state_dict`); `upgrade_optimizer_state` (below) re-keys optimizer.pt to match.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler

from atlas.checkpoint import layout
from atlas.checkpoint.layout import CheckpointError
from atlas.checkpoint.state import Stateful, TrainProgress
from atlas.config.loader import to_dict
from atlas.config.schema import AtlasConfig
from atlas.models.geometry import EARLIER_PARAMETERS, GeometryEncoder, upgrade_state_dict

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchSplit:
    """How the samples of one optimizer step are split over devices and micro-batches."""

    per_device: int
    world_size: int
    grad_accum: int

    @property
    def effective(self) -> int:
        return self.per_device * self.world_size * self.grad_accum

    @property
    def per_micro_batch(self) -> int:
        """Samples consumed by all ranks per micro-batch (the unit of `batch_in_epoch`)."""
        return self.per_device * self.world_size

    @classmethod
    def of(cls, cfg: AtlasConfig, world_size: int) -> BatchSplit:
        return cls(cfg.data.batch_size, world_size, cfg.training.gradient_accumulation_steps)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BatchSplit:
        return cls(int(d["per_device"]), int(d["world_size"]), int(d["grad_accum"]))

    def to_dict(self) -> dict[str, int]:
        return {**asdict(self), "effective": self.effective}

    def __str__(self) -> str:
        return (
            f"{self.per_device} per device x {self.world_size} process(es) x "
            f"{self.grad_accum} accumulation = {self.effective} samples per optimizer step"
        )


def check_batch(
    path: Path, old: BatchSplit, new: BatchSplit, progress: dict[str, Any], allow: bool
) -> bool:
    """True when the progress must be converted; raises when a new effective batch is refused."""
    if old == new:
        return False
    if old.effective == new.effective:
        log.info("Effective batch unchanged (%d): was %s, now %s", new.effective, old, new)
        return True
    if not allow:
        raise CheckpointError(refusal_message(path, old, new, progress))
    log.warning(
        "Effective batch changed (checkpoint.allow_batch_change): was %s, now %s. Step %d becomes "
        "%d (= %d samples seen / %d).",
        old,
        new,
        progress["step"],
        progress["samples_seen"] // new.effective,
        progress["samples_seen"],
        new.effective,
    )
    return True


def refusal_message(path: Path, old: BatchSplit, new: BatchSplit, progress: dict[str, Any]) -> str:
    """Old and new numbers, what they do to the step counter and the schedule, and the ways out."""
    step, seen = progress["step"], progress["samples_seen"]
    keep = "change the per-device batch and the accumulation together"
    if old.effective % new.per_micro_batch == 0:
        accum = old.effective // new.per_micro_batch
        keep = f"--set training.gradient_accumulation_steps={accum} keeps {old.effective}"
    return (
        f"cannot resume from {path}: the effective batch changed.\n"
        f"  checkpoint: {old}\n"
        f"  now:        {new}\n"
        f"The step counter counts optimizer steps: step {step} meant {seen} samples "
        f"({old.effective} per step); with {new.effective} per step the same counter would mean "
        f"{step * new.effective} samples. The warmup + cosine schedule is a function of the step "
        f"and of the total steps, which the new batch changes: it would continue at the wrong "
        f"point, and steps per epoch and every *_interval would change meaning.\n"
        f"Options:\n"
        f"  - keep the effective batch ({keep}): resumes as if nothing changed;\n"
        f"  - start a new run from the weights: checkpoint.load_from: {path};\n"
        f"  - set checkpoint.allow_batch_change: true to continue from the samples already seen: "
        f"step {step} becomes {seen // new.effective} (= {seen} / {new.effective}), the schedule "
        f"continues from there and the peak LRs follow the new config."
    )


def rebase_progress(
    objects: dict[str, Stateful],
    old: BatchSplit,
    new: BatchSplit,
    fresh_base_lrs: dict[str, list[float]],
) -> None:
    """Convert the loaded counters (and the schedule, if the effective batch changed) to `new`."""
    progress = next((o for o in objects.values() if isinstance(o, TrainProgress)), None)
    if progress is None:
        return
    # Position in the epoch: samples consumed, re-expressed in new micro-batches, rounded down to
    # a whole accumulation window (at most one window of samples is seen twice).
    consumed = progress.batch_in_epoch * old.per_micro_batch
    position = consumed // new.per_micro_batch
    progress.batch_in_epoch = position - position % new.grad_accum
    # The data sampler (atlas.distributed.sampler.ResumableSampler) says how long an epoch is.
    per_rank = [getattr(o, "num_samples_per_rank", None) for o in objects.values()]
    samples = next((n for n in per_rank if isinstance(n, int)), None)
    if samples is not None and progress.batch_in_epoch >= samples // new.per_device:
        progress.epoch, progress.batch_in_epoch = progress.epoch + 1, 0  # the epoch was consumed
    if old.effective == new.effective:
        return
    progress.step = progress.samples_seen // new.effective
    for name, obj in objects.items():
        if isinstance(obj, LRScheduler):
            _restart_schedule(obj, progress.step, fresh_base_lrs.get(name))


def _restart_schedule(sched: LRScheduler, step: int, base_lrs: list[float] | None) -> None:
    """Put `sched` at `step` with the new config's peaks (what a fresh run at `step` would use)."""
    if base_lrs:
        sched.base_lrs = list(base_lrs)
    sched.last_epoch = step
    sched._step_count = step + 1  # keeps torch's "step() before optimizer.step()" check quiet
    if isinstance(sched, LambdaLR):
        lrs = [base * fn(step) for base, fn in zip(sched.base_lrs, sched.lr_lambdas)]
    else:  # other schedulers recompute their LR on the next step()
        lrs = [g["lr"] for g in sched.optimizer.param_groups]
    for group, base, lr in zip(sched.optimizer.param_groups, sched.base_lrs, lrs):
        group["initial_lr"], group["lr"] = base, lr
    sched._last_lr = lrs  # type: ignore[attr-defined]


def seed_change(path: Path, cfg: AtlasConfig) -> tuple[int, int] | None:
    """(checkpoint's, this run's) `training.seed` when they differ, else None."""
    try:
        old = yaml.safe_load((path / layout.CONFIG).read_text())["training"]["seed"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return None
    return None if old == cfg.training.seed else (int(old), cfg.training.seed)


def log_config_changes(path: Path, cfg: AtlasConfig) -> None:
    """Say which settings differ from the checkpoint's config (resume is allowed; be explicit)."""
    try:
        old = yaml.safe_load((path / layout.CONFIG).read_text())
    except (OSError, yaml.YAMLError):
        return
    before, now = _flat(old), _flat(to_dict(cfg))
    ignored = ("checkpoint.resume", "checkpoint.load_from")
    changed = sorted(
        k for k in set(before) | set(now) if before.get(k) != now.get(k) and k not in ignored
    )
    if changed:
        log.info("Config differs from the checkpoint's in: %s", ", ".join(changed[:12]))


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix[:-1]: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}."))
    return out


# ------------------------------------------------------ optimizer states of earlier layouts


def upgrade_optimizer_state(
    saved: dict[str, Any], optimizer: Optimizer, policy: nn.Module
) -> dict[str, Any]:
    """`saved` (an optimizer.pt) made to fit `optimizer` if an earlier parameter layout wrote it
    (`atlas.models.geometry.EARLIER_PARAMETERS`: two parameters now one); else `saved` as it is.

    A torch optimizer keys its state by position in its groups, not by name, and the policy's
    groups list parameters in registration order: the earlier positions are today's with each
    merged parameter expanded to the ones it replaced. Their moments (exp_avg, exp_avg_sq) are
    joined row-wise as the weights are (`upgrade_state_dict`); AdamW is elementwise, so the next
    step is the one the earlier layout would have taken. A state that cannot be joined restarts.
    """
    names = {id(p): n for n, p in policy.named_parameters()}
    now = [[names.get(id(p), "") for p in g["params"]] for g in optimizer.param_groups]
    replaced = _replaced_names(policy)
    before = [[old for name in group for old in replaced.get(name, (name,))] for group in now]
    sizes = [len(g["params"]) for g in saved["param_groups"]]
    if sizes == [len(g) for g in now] or sizes != [len(g) for g in before]:
        return saved  # today's layout, or neither (load_state_dict then says what differs)
    if any("" in group for group in now):
        return saved  # a parameter outside the policy: no names to match positions by
    by_name = {
        name: saved["state"][i]
        for group, g in zip(before, saved["param_groups"])
        for name, i in zip(group, g["params"])
        if i in saved["state"]  # a parameter never stepped has no state
    }
    params = dict(policy.named_parameters())
    state: dict[int, Any] = {}
    groups: list[dict[str, Any]] = []
    position = 0
    for group, g in zip(now, saved["param_groups"]):
        ids = list(range(position, position + len(group)))
        position += len(group)
        for i, name in zip(ids, group):
            olds = replaced.get(name)
            entry = (
                by_name.get(name) if olds is None else _joined(name, olds, by_name, params[name])
            )
            if entry is not None:
                state[i] = entry
        groups.append({**g, "params": ids})
    return {"state": state, "param_groups": groups}


def _replaced_names(policy: nn.Module) -> dict[str, tuple[str, ...]]:
    """{parameter: those an earlier version held in its place, in their registration order}."""
    out: dict[str, tuple[str, ...]] = {}
    for prefix, module in policy.named_modules():
        if isinstance(module, GeometryEncoder):
            p = f"{prefix}." if prefix else ""
            out |= {p + new: tuple(p + o for o in olds) for new, olds in EARLIER_PARAMETERS.items()}
    return out


def _joined(
    name: str, olds: tuple[str, ...], by_name: dict[str, dict[str, Any]], param: Tensor
) -> dict[str, Any] | None:
    """The optimizer state of `name` from those of the parameters `olds` it replaced; None (a
    fresh state) when they had none, or when they cannot be joined (said in the log)."""
    entries = [by_name.get(old) for old in olds]
    if all(e is None for e in entries):
        return None  # never stepped: nothing to keep
    try:
        joined = _join(name, dict(zip(olds, entries)), param)
    except (ValueError, RuntimeError) as e:  # RuntimeError: torch.cat of unequal widths
        log.warning("Optimizer state of %s restarts (from %s: %s)", name, " + ".join(olds), e)
        return None
    log.info("Optimizer state of %s joined from the earlier %s", name, " + ".join(olds))
    return joined


def _join(name: str, entries: dict[str, Any], param: Tensor) -> dict[str, Any]:
    """Row-joined moments and the common step count of `entries` (old name -> state)."""
    states = list(entries.values())
    if any(s is None for s in states):
        raise ValueError("only some of them have a state")
    if any(set(s) != set(states[0]) for s in states):
        raise ValueError("their states hold different entries")
    prefix = name[: name.rfind(".") + 1]
    joined: dict[str, Any] = {}
    for key, first in states[0].items():
        values = {old: e[key] for old, e in entries.items()}
        if isinstance(first, Tensor) and first.ndim > 0:  # a moment: a value per weight
            upgrade_state_dict(values, prefix)
            value = values.get(name)
            if value is None or value.shape != param.shape:
                raise ValueError(f"their {key} do not join into the shape {tuple(param.shape)}")
            joined[key] = value
        elif all(_same(v, first) for v in values.values()):  # the step count
            joined[key] = first
        else:
            raise ValueError(f"their {key} differ")
    return joined


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, Tensor) and isinstance(b, Tensor):
        return torch.equal(a, b)
    return bool(a == b)
