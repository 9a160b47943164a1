"""Offline metrics on held-out episodes: one function for the trainer's validation and `atlas eval`.

`evaluate_policy` runs the policy over a loader and returns, overall and per task:

    loss (+ components)   the policy's own training loss (normalized space), sample-weighted mean
    l1 / mse              per action dimension, in ACTION UNITS (unnormalized), over every valid
                          step of every predicted chunk (`action_mask`)
    gripper_accuracy      fraction of valid steps whose predicted gripper command has the sign of
                          the target (LIBERO: -1 open, +1 close)
    position / rotation   per-group L1 beside the mean training action's on the same steps, and
                          their ratio (`atlas.eval.metrics`; the position ratio is the headline)

Sums and counts are reduced across ranks (never means of means), so a sharded validation gives the
same numbers as one process. `atlas eval --checkpoint DIR` rebuilds the checkpoint's validation
split from its config and seed and prints the same numbers as a table or JSON
(atlas.eval.offline_cli).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from atlas.config.schema import LossConfig
from atlas.data.normalization import Normalizer
from atlas.distributed.env import all_reduce_sum
from atlas.eval.metrics import (
    GRIPPER,
    ROW_WIDTH,
    SAMPLES,
    TASK_LOSS,
    TASK_LOSS_SAMPLES,
    error_metrics,
    per_sample_sums,
)
from atlas.models.loss import VLALoss
from atlas.runtime import PrecisionPolicy

log = logging.getLogger(__name__)

# The loss components of the policy contract; fixed so every rank reduces the same-sized tensor
# even when it holds no validation batch.
LOSS_KEYS = ("loss", "loss_pose", "loss_gripper")
# Columns of _EvalTotals.loss_sums after LOSS_KEYS' (0, 1, 2): the mean-action baseline's loss,
# then the number of samples that weights all of them; _WEIGHTED_LOSSES are the weighted columns.
_MEAN_ACTION_LOSS = len(LOSS_KEYS)
_LOSS_SAMPLES = _MEAN_ACTION_LOSS + 1
_WEIGHTED_LOSSES = slice(0, _LOSS_SAMPLES)


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Tensors of a collated batch moved to `device` (non-blocking from pinned memory)."""
    return {
        k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in batch.items()
    }


class _EvalTotals:
    """The running sums of one evaluation, in two float64 tensors so that ranks reduce them with
    one collective each (and add them exactly, whatever the sharding).

    task_rows  [num_tasks, ROW_WIDTH]: per task, a sums row of atlas.eval.metrics, its
               TASK_LOSS / TASK_LOSS_SAMPLES columns filled by `add_task_loss`
    loss_sums  [_LOSS_SAMPLES + 1]: sample-weighted sums of LOSS_KEYS, then of the mean-action
               loss (_MEAN_ACTION_LOSS), then the samples that weight them (_LOSS_SAMPLES)
    """

    def __init__(self, num_tasks: int, device: torch.device) -> None:
        self.task_rows = torch.zeros(num_tasks, ROW_WIDTH, dtype=torch.float64, device=device)
        self.loss_sums = torch.zeros(_LOSS_SAMPLES + 1, dtype=torch.float64, device=device)

    def add_rows(self, task_index: Tensor, rows: Tensor) -> None:
        """Add per-sample sums rows [B, ROW_WIDTH] to the rows of their tasks [B]."""
        self.task_rows.index_add_(0, task_index.to(self.task_rows.device), rows)

    def add_losses(self, losses: Tensor, samples: int) -> None:
        """Add one batch's mean losses [*LOSS_KEYS, mean-action loss], weighted by its samples."""
        self.loss_sums[_WEIGHTED_LOSSES] += losses.double() * samples
        self.loss_sums[_LOSS_SAMPLES] += samples

    def add_task_loss(self, task: int, loss: Tensor, samples: int) -> None:
        """Add the mean loss of `samples` samples of one task."""
        self.task_rows[task, TASK_LOSS] += loss.double() * samples
        self.task_rows[task, TASK_LOSS_SAMPLES] += samples

    def all_reduce(self) -> None:
        """Sum both tensors over ranks (a collective: every rank calls it)."""
        all_reduce_sum(self.task_rows)
        all_reduce_sum(self.loss_sums)

    def mean_losses(self) -> dict[str, float]:
        """{*LOSS_KEYS, "mean_action_loss"}: sample-weighted means (0 when no sample was seen)."""
        n = max(float(self.loss_sums[_LOSS_SAMPLES]), 1.0)
        out = {key: float(self.loss_sums[i]) / n for i, key in enumerate(LOSS_KEYS)}
        out["mean_action_loss"] = float(self.loss_sums[_MEAN_ACTION_LOSS]) / n
        return out


@torch.no_grad()
def evaluate_policy(
    policy: nn.Module,
    loader: Iterable[dict[str, Any]],
    normalizer: Normalizer,
    device: torch.device,
    precision: PrecisionPolicy | None = None,
    *,
    task_names: list[str] | None = None,
    per_task_loss: bool = False,
) -> dict[str, Any]:
    """Offline metrics of `policy` over `loader` (every rank its shard; results are global).

    Pass the policy, not its DDP wrapper (under FSDP2: inside `strategy.gathered(model)`): its
    forward must run no collective, because ranks may hold different numbers of validation
    batches; the only collectives are the two sum-reductions at the end. Task names default to
    `loader.dataset.tasks`.
    `per_task_loss` adds one forward per task present in each batch (the policy's loss is a batch
    mean); the overall numbers never depend on it.

    Returns {"loss", "loss_pose", "loss_gripper", "mean_action_loss" (the same loss for a
    constant prediction of the mean training action, a reference point), "l1": {dim: v},
    "mse": {dim: v}, "l1_mean", "mse_mean", "gripper_accuracy", "num_samples", the per-group
    keys of `atlas.eval.metrics.error_metrics` ("position_l1", "position_ratio", ...),
    "per_task": {name: {the same error metrics[, loss]}}}.
    """
    tasks = task_names or list(getattr(getattr(loader, "dataset", None), "tasks", None) or [])
    if not tasks:  # the sums are sized by task (and must be the same size on every rank)
        raise ValueError("evaluate_policy: pass task_names, or a loader whose dataset has .tasks")
    totals = _EvalTotals(len(tasks), device)
    baseline = _MeanActionBaseline(policy, normalizer, device)
    autocast = precision.autocast if precision is not None else contextlib.nullcontext
    was_training = policy.training
    policy.eval()
    try:
        for batch in loader:
            batch = to_device(batch, device)
            with autocast():
                loss, metrics, pred = policy.evaluate_batch(batch)  # one forward pass
            _accumulate(totals, batch, {**metrics, "loss": loss}, pred, normalizer, baseline)
            if per_task_loss:
                _accumulate_task_loss(totals, policy, batch, autocast)
    finally:
        policy.train(was_training)
    return _finalize(totals, tasks, per_task_loss)


class _MeanActionBaseline:
    """The policy's loss for always predicting the mean training action (normalized space).

    The mean comes from the normalization statistics (computed on the training split unless
    data.stats_path names a file); the normalization is affine, so normalizing the mean gives the
    mean of the normalized training actions. With `gripper_loss: bce` the gripper channel is a
    logit, so the mean is mapped through atanh.
    """

    def __init__(self, policy: nn.Module, normalizer: Normalizer, device: torch.device) -> None:
        # The policy's own loss (its PolicyConfig.loss); the defaults for a policy without one.
        loss_cfg = getattr(getattr(policy, "config", None), "loss", None) or LossConfig()
        self.loss_fn = VLALoss(loss_cfg)
        mean = torch.tensor(normalizer.stats["action"]["mean"], dtype=torch.float64)
        self.action = mean.to(device)  # action units, for the per-group baseline errors
        pred = normalizer.normalize_action(mean).float()
        if loss_cfg.gripper_loss == "bce":  # the head predicts a logit: invert tanh(x / 2)
            pred[GRIPPER] = 2 * torch.atanh(pred[GRIPPER].clamp(-0.999, 0.999))
        self.pred = pred.to(device)

    def __call__(self, target: Tensor, mask: Tensor) -> Tensor:
        loss, _ = self.loss_fn(self.pred.expand_as(target), target, mask)
        return loss


def _accumulate(
    totals: _EvalTotals,
    batch: dict[str, Any],
    losses: dict[str, Tensor],
    pred: Tensor,
    normalizer: Normalizer,
    baseline: _MeanActionBaseline,
) -> None:
    """Add one batch's errors (action units) and losses to the running sums."""
    target, mask = batch["actions"], batch["action_mask"]
    pred_u = normalizer.unnormalize_action(pred.detach().double())
    target_u = normalizer.unnormalize_action(target.double())
    per_sample = per_sample_sums(pred_u, target_u, mask.to(torch.float64), baseline.action)
    totals.add_rows(batch["task_index"], per_sample)
    device = totals.loss_sums.device
    zero = torch.zeros((), device=device)
    values = [losses.get(k, zero).detach().to(device) for k in LOSS_KEYS]
    values.append(baseline(target, mask).detach().to(device))
    totals.add_losses(torch.stack(values), samples=target.shape[0])


def _accumulate_task_loss(
    totals: _EvalTotals, policy: nn.Module, batch: dict[str, Any], autocast: Any
) -> None:
    """Per-task loss: one forward on the samples of each task present in the batch."""
    task_index = batch["task_index"]
    for task in torch.unique(task_index).tolist():
        idx = (task_index == task).nonzero().flatten()
        with autocast():
            loss, _ = policy(_select(batch, idx))
        totals.add_task_loss(task, loss.detach(), samples=len(idx))


def _select(batch: dict[str, Any], idx: Tensor) -> dict[str, Any]:
    """The samples `idx` of a collated batch (tensors indexed, lists picked)."""
    rows = idx.tolist()
    return {k: v[idx] if isinstance(v, Tensor) else [v[i] for i in rows] for k, v in batch.items()}


def _finalize(totals: _EvalTotals, tasks: list[str], per_task_loss: bool) -> dict[str, Any]:
    """Reduce the sums across ranks and turn them into means."""
    totals.all_reduce()
    out: dict[str, Any] = totals.mean_losses()
    out.update(error_metrics(totals.task_rows.sum(0)))
    out["per_task"] = {}
    for t, row in enumerate(totals.task_rows):
        if row[SAMPLES] == 0:  # no sample of this task in the split
            continue
        name = tasks[t] if t < len(tasks) else f"task_{t}"
        entry = error_metrics(row)
        if per_task_loss:
            entry["loss"] = float(row[TASK_LOSS]) / max(float(row[TASK_LOSS_SAMPLES]), 1.0)
        out["per_task"][name] = entry
    return out
