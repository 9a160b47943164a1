"""The guard that stops a run whose numbers went bad (a NaN or inf loss or gradient norm).

Every optimizer step is checked, on the device: `record` folds "is this step's loss (or gradient
norm) finite?" into a two-element tensor holding the first bad step of each, with no host
synchronisation. `check` brings those two integers to the host; the trainer calls it only where it
reads or writes anyway (a log line, validation, a checkpoint, an export), so no checkpoint or
export is ever written after a bad step and the run stops with the step where it went wrong.
With fp16 the GradScaler skips steps whose gradients overflowed (that is how loss scaling works),
so only the loss is checked then.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor

from atlas.distributed.env import DistInfo

ADVICE = (
    "lower training.learning_rate, raise training.warmup_steps, set training.max_grad_norm "
    "(e.g. 1.0), or try training.mixed_precision=fp32"
)


class FiniteGuard:
    """First non-finite step of the training loss and of the gradient norm, kept on the device."""

    def __init__(self, device: torch.device, check_grad_norm: bool = True) -> None:
        self.check_grad_norm = check_grad_norm
        self.first_bad = torch.full((2,), -1, dtype=torch.long, device=device)  # loss, grad norm

    def record(self, step: int, loss: Tensor, grad_norm: Tensor) -> None:
        """Note optimizer step `step` (1-based) if its loss or gradient norm is NaN or inf."""
        norm = grad_norm.detach().to(self.first_bad.device)  # DeepSpeed's is a host scalar
        finite = torch.stack([loss.detach().float().isfinite(), norm.isfinite()])
        if not self.check_grad_norm:
            finite[1] = True
        fresh = ~finite & (self.first_bad < 0)
        self.first_bad = torch.where(fresh, torch.full_like(self.first_bad, step), self.first_bad)

    def check(self, dist: DistInfo, run_dir: Path) -> None:
        """Raise FloatingPointError (exit 1) if a recorded step was bad, on any rank."""
        first = self.first_bad
        if dist.distributed:  # every rank stops at the same point, with the same message
            first = first.clone()
            torch.distributed.all_reduce(first, op=torch.distributed.ReduceOp.MAX)
        loss_step, grad_step = (int(v) for v in first.tolist())
        if loss_step < 0 and grad_step < 0:
            return
        what, step = ("loss", loss_step) if loss_step >= 0 else ("gradient norm", grad_step)
        if 0 <= grad_step < step:
            what, step = "gradient norm", grad_step
        raise FloatingPointError(
            f"the training {what} is not finite (NaN or inf) at step {step}: stopped; the "
            f"checkpoints in {run_dir} are from before that step. Try: {ADVICE}"
        )


def check_validation_loss(loss: float, step: int, run_dir: Path) -> None:
    """Raise FloatingPointError if the (rank-reduced) validation loss is NaN or inf."""
    if not math.isfinite(loss):
        raise FloatingPointError(
            f"the validation loss is {loss} at step {step}: stopped before exporting best/; the "
            f"checkpoints in {run_dir} are from before that step. Try: {ADVICE}"
        )
