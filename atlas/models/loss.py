"""VLALoss: the training objective on a normalized action chunk.

    loss = pose_weight * pose_term + gripper_weight * gripper_term
    pose_term    = SmoothL1(pose)                            (pose_loss: smooth_l1, beta 1)
                 | L1(pose)                                  (pose_loss: l1)
    gripper_term = L1(gripper)                               (gripper_loss: l1)
                 | BCE-with-logits(logit, target > 0)        (gripper_loss: bce)

Chunk steps past the end of an episode (action_mask False) contribute nothing; each term is a
mean over the valid steps (and over the 6 pose dimensions), so the loss scale does not depend on
the chunk length or on how many steps are masked. BCE maps the normalized gripper target to
{0, 1} by its sign: LIBERO's gripper is -1 (open) / +1 (closed) and the q99 and mean/std
normalizations keep that sign for a two-valued signal.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from atlas.config.schema import LossConfig
from atlas.models.action_head import POSE_DIM


def _l1(pred: Tensor, target: Tensor) -> Tensor:
    return (pred - target).abs()


def _gripper_bce(logit: Tensor, target: Tensor) -> Tensor:
    return F.binary_cross_entropy_with_logits(logit, (target > 0).to(logit.dtype), reduction="none")


def _pose_smooth_l1(pred: Tensor, target: Tensor) -> Tensor:
    return F.smooth_l1_loss(pred, target, reduction="none")


# Per-element pose losses, [B, Hc, 6] -> [B, Hc, 6]; selected by LossConfig.pose_loss.
POSE_LOSSES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "smooth_l1": _pose_smooth_l1,
    "l1": _l1,
}
# Per-element gripper losses, [B, Hc] -> [B, Hc]; selected by LossConfig.gripper_loss.
GRIPPER_LOSSES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "l1": _l1,
    "bce": _gripper_bce,
}


def gripper_prediction(raw: Tensor, gripper_loss: str) -> Tensor:
    """The gripper channel as a normalized action: the value itself (l1) or 2*sigmoid-1 (bce)."""
    return torch.tanh(raw / 2) if gripper_loss == "bce" else raw  # tanh(x/2) = 2*sigmoid(x)-1


class VLALoss(nn.Module):
    """(pred [B, Hc, 7], target [B, Hc, 7], mask [B, Hc] bool) -> (loss, components)."""

    def __init__(self, cfg: LossConfig) -> None:
        super().__init__()
        if cfg.gripper_loss not in GRIPPER_LOSSES:
            raise ValueError(
                f"gripper_loss {cfg.gripper_loss!r}; choose from {list(GRIPPER_LOSSES)}"
            )
        if cfg.pose_loss not in POSE_LOSSES:
            raise ValueError(f"pose_loss {cfg.pose_loss!r}; choose from {list(POSE_LOSSES)}")
        self.cfg = cfg
        self.pose_fn = POSE_LOSSES[cfg.pose_loss]
        self.gripper_fn = GRIPPER_LOSSES[cfg.gripper_loss]

    def forward(
        self, pred: Tensor, target: Tensor, mask: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Returns the weighted total and {"loss", "loss_pose", "loss_gripper"} (detached)."""
        pred, target = pred.float(), target.float()  # the loss is computed in fp32 under AMP
        if mask is None:
            mask = torch.ones(pred.shape[:2], dtype=torch.bool, device=pred.device)
        weight = mask.to(pred.dtype)
        # clamp: a batch whose chunks are all masked (cannot happen with step 0 always valid)
        # gives zero loss instead of NaN.
        valid = weight.sum().clamp_min(1.0)
        pose = self.pose_fn(pred[..., :POSE_DIM], target[..., :POSE_DIM])
        loss_pose = (pose.mean(-1) * weight).sum() / valid
        gripper = self.gripper_fn(pred[..., POSE_DIM], target[..., POSE_DIM])
        loss_gripper = (gripper * weight).sum() / valid
        loss = self.cfg.pose_weight * loss_pose + self.cfg.gripper_weight * loss_gripper
        metrics = {"loss": loss, "loss_pose": loss_pose, "loss_gripper": loss_gripper}
        return loss, {k: v.detach() for k, v in metrics.items()}
