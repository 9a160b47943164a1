"""Per-group action metrics beside the mean-action baseline on the same samples.

An average over the 7 action dimensions hides the arm: a model that only learns the gripper
(a two-valued, easily predicted signal) can halve the mean loss while its position error stays
where always predicting the mean action leaves it. So offline metrics report each group of the
LIBERO action separately, next to what the mean training action scores on exactly the same steps:

    position   x, y, z          L1 in action units, and its ratio to the mean action's L1
    rotation   roll, pitch, yaw L1 in action units, and the ratio (None when the mean action is
                                exact, e.g. data whose rotation is always 0)
    gripper    command sign     accuracy, and the ratio of error rates (1 - acc) / (1 - acc_mean)

The headline is the position ratio (`HEADLINE`): it is 1.0 for a model that has not learned to
move the arm, whatever its gripper does.

Sums are per sample, in one float64 row of `ROW_WIDTH` columns (see `per_sample_sums`), so ranks
and tasks reduce them by addition and `error_metrics` turns any sum of rows into means.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

ACTION_DIMS = ("x", "y", "z", "roll", "pitch", "yaw", "gripper")
GRIPPER = 6  # index of the gripper command in a 7-value action
GROUPS: dict[str, tuple[int, ...]] = {"position": (0, 1, 2), "rotation": (3, 4, 5)}
HEADLINE = "position_ratio"
# The per-group keys of `error_metrics` (what `group_lines` prints and run summaries keep).
GROUP_KEYS = (
    "position_l1",
    "mean_action_position_l1",
    "position_ratio",
    "rotation_l1",
    "mean_action_rotation_l1",
    "rotation_ratio",
    "gripper_accuracy",
    "mean_action_gripper_accuracy",
    "gripper_error_ratio",
)

_D = len(ACTION_DIMS)
# Columns of a sums row: |err| (7), err^2 (7), |mean-action err| (7), gripper sign correct,
# mean-action gripper sign correct, valid steps, samples, then two that `per_sample_sums` leaves
# zero for the caller (the per-task loss sum and its sample count: the policy's loss is a batch
# mean, so only the caller, with one forward per task, can fill them).
ABS, SQ, BASE = slice(0, _D), slice(_D, 2 * _D), slice(2 * _D, 3 * _D)
GRIP_OK, BASE_GRIP_OK, STEPS, SAMPLES = 3 * _D, 3 * _D + 1, 3 * _D + 2, 3 * _D + 3
TASK_LOSS, TASK_LOSS_SAMPLES = 3 * _D + 4, 3 * _D + 5
ROW_WIDTH = TASK_LOSS_SAMPLES + 1


def per_sample_sums(pred: Tensor, target: Tensor, weight: Tensor, mean_action: Tensor) -> Tensor:
    """One sums row per sample: float64 [B, ROW_WIDTH] (TASK_LOSS and TASK_LOSS_SAMPLES zero).

    pred, target: actions in ACTION UNITS [B, Hc, 7]; weight: [B, Hc] (1 on valid chunk steps,
    0 past an episode's end); mean_action: [7] in action units, the constant baseline.
    """
    pred, target, weight = pred.double(), target.double(), weight.double()
    w = weight[..., None]
    err = (pred - target) * w  # zero on padded steps
    base_err = (mean_action.double().to(target.device) - target) * w
    closed = target[..., GRIPPER] > 0
    grip_ok = ((pred[..., GRIPPER] > 0) == closed).double() * weight
    base_ok = ((mean_action[GRIPPER] > 0) == closed).double() * weight
    b = target.shape[0]
    return torch.cat(
        [
            err.abs().sum(1),
            err.square().sum(1),
            base_err.abs().sum(1),
            grip_ok.sum(1, keepdim=True),
            base_ok.sum(1, keepdim=True),
            weight.sum(1, keepdim=True),
            torch.ones(b, 1, dtype=torch.float64, device=weight.device),
            torch.zeros(b, 2, dtype=torch.float64, device=weight.device),  # TASK_LOSS, ..._SAMPLES
        ],
        dim=1,
    )


def _ratio(value: float, baseline: float) -> float | None:
    return value / baseline if baseline > 1e-12 else None


def error_metrics(row: Tensor) -> dict[str, Any]:
    """Means of one (summed) sums row.

    Returns {"l1": {dim: v}, "mse": {dim: v}, "l1_mean", "mse_mean", "gripper_accuracy",
    "num_samples", and per group g in GROUPS: "<g>_l1", "mean_action_<g>_l1", "<g>_ratio";
    "mean_action_gripper_accuracy", "gripper_error_ratio"}.
    """
    steps = max(float(row[STEPS]), 1.0)
    l1, mse, base = ((row[s] / steps).tolist() for s in (ABS, SQ, BASE))
    out: dict[str, Any] = {
        "l1": dict(zip(ACTION_DIMS, l1)),
        "mse": dict(zip(ACTION_DIMS, mse)),
        "l1_mean": sum(l1) / _D,
        "mse_mean": sum(mse) / _D,
        "gripper_accuracy": float(row[GRIP_OK]) / steps,
        "num_samples": int(row[SAMPLES]),
    }
    for group, dims in GROUPS.items():
        value = sum(l1[i] for i in dims) / len(dims)
        baseline = sum(base[i] for i in dims) / len(dims)
        out[f"{group}_l1"], out[f"mean_action_{group}_l1"] = value, baseline
        out[f"{group}_ratio"] = _ratio(value, baseline)
    out["mean_action_gripper_accuracy"] = float(row[BASE_GRIP_OK]) / steps
    out["gripper_error_ratio"] = _ratio(
        1.0 - out["gripper_accuracy"], 1.0 - out["mean_action_gripper_accuracy"]
    )
    return out


def _percent(ratio: float | None) -> str:
    return "mean action exact" if ratio is None else f"{100 * ratio:.1f}%"


def group_lines(m: dict[str, Any]) -> list[str]:
    """The per-group comparison as three lines; the first (position) is the headline."""
    return [
        f"position L1 {m['position_l1']:.4f} vs {m['mean_action_position_l1']:.4f} for the mean "
        f"action ({_percent(m['position_ratio'])})",
        f"rotation L1 {m['rotation_l1']:.4f} vs {m['mean_action_rotation_l1']:.4f} "
        f"({_percent(m['rotation_ratio'])})",
        f"gripper accuracy {m['gripper_accuracy']:.3f} vs "
        f"{m['mean_action_gripper_accuracy']:.3f} for the mean action",
    ]


def format_metrics_table(result: dict[str, Any]) -> str:
    """Per-task rows and an overall row (groups beside the baseline), per-dimension errors, and
    the group lines last: what a reader sees first is what the policy does with the arm."""
    header = (
        f"{'task':<52} {'n':>5} {'loss':>7} {'pos L1':>7} {'(mean)':>7} {'rot L1':>7} "
        f"{'grip acc':>8} {'(mean)':>6}"
    )
    rows = [header, "-" * len(header)]

    def row(name: str, m: dict[str, Any]) -> str:
        loss = f"{m['loss']:7.4f}" if "loss" in m else f"{'':7}"
        return (
            f"{name[:52]:<52} {m['num_samples']:>5} {loss} {m['position_l1']:7.4f} "
            f"{m['mean_action_position_l1']:7.4f} {m['rotation_l1']:7.4f} "
            f"{m['gripper_accuracy']:8.3f} {m['mean_action_gripper_accuracy']:6.3f}"
        )

    rows += [row(name, m) for name, m in result["per_task"].items()]
    rows += ["-" * len(header), row("overall", result)]
    rows += ["", f"{'dim':<8} {'L1':>10} {'MSE':>12}"]
    rows += [f"{d:<8} {result['l1'][d]:10.5f} {result['mse'][d]:12.6f}" for d in ACTION_DIMS]
    rows += ["", f"loss {result['loss']:.4f} vs {result['mean_action_loss']:.4f} (mean action)"]
    return "\n".join([*rows, *group_lines(result)])
