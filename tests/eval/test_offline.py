"""evaluate_policy: errors in action units, masking, gripper accuracy, per-task and weighted means.

The equality of `atlas eval` with the trainer's validation on a real run lives in
tests/training/test_trainer.py (it reuses a trained run).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor, nn

from atlas.config.schema import LossConfig
from atlas.data.normalization import Normalizer
from atlas.eval.metrics import ACTION_DIMS, format_metrics_table
from atlas.eval.offline import evaluate_policy
from atlas.models.loss import VLALoss

CPU = torch.device("cpu")
# Normalized offset the fake policy adds to every valid target step, per dimension.
OFFSET = torch.tensor([0.1, -0.2, 0.3, 0.0, 0.05, -0.05, 0.0])


def _stats(scale: float) -> dict[str, Any]:
    def group(n: int) -> dict[str, list[float]]:
        return {
            "mean": [0.25] * n,
            "std": [scale] * n,
            "min": [-1.0] * n,
            "max": [1.0] * n,
            "q01": [-1.0] * n,
            "q99": [1.0] * n,
        }

    return {"action": group(7), "proprio": group(8), "num_samples": 10}


class FakePolicy(nn.Module):
    """Predicts target + OFFSET on valid steps, garbage on masked ones; flips task 1's gripper.

    Its "loss" is a constant per batch (the batch size), to check sample weighting.
    """

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))

    def forward(self, batch: dict[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
        b = float(batch["actions"].shape[0])
        loss = torch.tensor(b)
        return loss, {"loss": loss, "loss_pose": loss / 2, "loss_gripper": loss / 4}

    def predict_chunk(self, batch: dict[str, Any]) -> Tensor:
        pred = batch["actions"] + OFFSET
        flip = batch["task_index"] == 1
        pred[flip, :, 6] = -pred[flip, :, 6]
        return torch.where(batch["action_mask"][..., None], pred, torch.full_like(pred, 99.0))

    def evaluate_batch(self, batch: dict[str, Any]) -> tuple[Tensor, dict[str, Tensor], Tensor]:
        return (*self(batch), self.predict_chunk(batch))


def _batch(tasks: list[int]) -> dict[str, Any]:
    b = len(tasks)
    actions = torch.zeros(b, 2, 7)
    actions[..., 6] = torch.tensor([1.0, -1.0] * b).view(b, 2)  # normalized gripper +-1
    mask = torch.ones(b, 2, dtype=torch.bool)
    mask[0, 1] = False  # the first sample's second chunk step is past the episode end
    return {
        "images": torch.zeros(b, 1, 3, 14, 14, dtype=torch.uint8),
        "instruction": [f"task {t}" for t in tasks],
        "actions": actions,
        "action_mask": mask,
        "proprio": torch.zeros(b, 8),
        "task_index": torch.tensor(tasks),
    }


def test_metrics_in_action_units_with_masking_and_per_task() -> None:
    normalizer = Normalizer(_stats(scale=2.0), "mean_std")  # action = 2 * normalized + 0.25
    loader = [_batch([0, 0, 1]), _batch([1]), _batch([0, 1, 1, 0, 0])]
    policy = FakePolicy().train()
    out = evaluate_policy(
        policy, loader, normalizer, CPU, task_names=["zero", "one"], per_task_loss=True
    )
    assert policy.training  # mode restored
    valid_steps = 9 * 2 - 3  # 9 samples x 2 steps, one masked step per batch
    expected_l1 = (2 * OFFSET.abs()).tolist()
    for d, name in enumerate(ACTION_DIMS[:6]):
        assert out["l1"][name] == pytest.approx(expected_l1[d], abs=1e-6)
        assert out["mse"][name] == pytest.approx(expected_l1[d] ** 2, abs=1e-6)
    # gripper: task 1 predicts -target, error 2 * 2 = 4 in action units on its valid steps
    task1_steps = 2 + 1 + 4  # task 1: 2 steps (batch 1), 1 unmasked (batch 2), 2 x 2 (batch 3)
    assert out["l1"]["gripper"] == pytest.approx(4.0 * task1_steps / valid_steps)
    assert out["gripper_accuracy"] == pytest.approx(1 - task1_steps / valid_steps)
    assert out["per_task"]["zero"]["gripper_accuracy"] == 1.0
    assert out["per_task"]["one"]["gripper_accuracy"] == 0.0
    assert out["per_task"]["zero"]["num_samples"] == 5 and out["num_samples"] == 9
    # sample-weighted mean of per-batch losses 3, 1, 5
    assert out["loss"] == pytest.approx((3 * 3 + 1 * 1 + 5 * 5) / 9)
    assert out["loss_pose"] == pytest.approx(out["loss"] / 2)
    # per-task loss: one forward per task and batch; the fake loss is the sub-batch size
    assert out["per_task"]["zero"]["loss"] == pytest.approx((2 * 2 + 3 * 3) / 5)
    assert "per_task" in out and "one" in format_metrics_table(out)


def test_mean_action_baseline_uses_the_policy_loss() -> None:
    normalizer = Normalizer(_stats(scale=0.5), "mean_std")
    batch = _batch([0, 1, 0])
    out = evaluate_policy(FakePolicy(), [batch], normalizer, CPU, task_names=["a", "b"])
    mean = normalizer.normalize_action(torch.full((7,), 0.25)).float()
    expected, _ = VLALoss(LossConfig())(
        mean.expand_as(batch["actions"]), batch["actions"], batch["action_mask"]
    )
    assert out["mean_action_loss"] == pytest.approx(expected.item())


def test_an_empty_shard_still_reports() -> None:
    out = evaluate_policy(FakePolicy(), [], Normalizer(_stats(1.0), "none"), CPU, task_names=["a"])
    assert out["num_samples"] == 0 and out["per_task"] == {}
    with pytest.raises(ValueError, match="task_names"):
        evaluate_policy(FakePolicy(), [], Normalizer(_stats(1.0), "none"), CPU)


def test_group_metrics_sit_beside_the_mean_action_on_the_same_steps() -> None:
    normalizer = Normalizer(_stats(scale=2.0), "mean_std")  # action = 2 * normalized + 0.25
    batch = _batch([0, 1, 0])
    batch["actions"][..., :3] = 0.5  # 1.25 in action units; the mean action is 0.25
    out = evaluate_policy(FakePolicy(), [batch], normalizer, CPU, task_names=["a", "b"])
    position = 2 * OFFSET[:3].abs().mean().item()
    assert out["position_l1"] == pytest.approx(position)
    assert out["mean_action_position_l1"] == pytest.approx(1.0)
    assert out["position_ratio"] == pytest.approx(position)
    assert out["rotation_l1"] == pytest.approx(2 * OFFSET[3:6].abs().mean().item())
    assert out["rotation_ratio"] is None  # rotation targets equal the mean: nothing to beat
    # Gripper: step 0 of each sample is closed, step 1 open, one step 1 masked: 5 valid steps.
    # The mean (0.25 > 0) always says "closed"; the policy flips task 1's (one sample) sign.
    assert out["mean_action_gripper_accuracy"] == pytest.approx(3 / 5)
    assert out["gripper_accuracy"] == pytest.approx(3 / 5)
    assert out["gripper_error_ratio"] == pytest.approx(1.0)
    assert out["per_task"]["a"]["gripper_accuracy"] == 1.0
    assert out["per_task"]["a"]["mean_action_gripper_accuracy"] == pytest.approx(2 / 3)
    table = format_metrics_table({**out, "loss": 1.0})
    assert table.splitlines()[-3].startswith("position L1 ")
