"""Optimizer and learning-rate schedule: AdamW over the policy's parameter groups, warmup + cosine.

The schedule is a pure function of the optimizer step (`lr_at`), so a resumed run, a test and a
plot all agree on the LR of step N without replaying anything. It is applied through `LambdaLR`,
whose multiplier is `lr_at(step, 1.0, ...)`: every group keeps its own peak (per-module LRs), and
the scheduler's state (`last_epoch` == optimizer steps done) is checkpointable.

Convention (the documents' table, and `LambdaLR`'s): the update that turns step `s` into `s + 1`
uses `lr_at(s)`. So step 0 has LR 0, step `warmup_steps / 4` has a quarter of the peak, and from
`warmup_steps` on the LR follows a half cosine down to `min_lr_ratio x peak` at `total_steps`.
"""

from __future__ import annotations

import functools
import logging
import math
from typing import Any

import torch
from torch.optim.lr_scheduler import LambdaLR

from atlas.config.schema import POLICY_MODULES, AtlasConfig
from atlas.models.policy import AtlasVLAPolicy

log = logging.getLogger(__name__)


def lr_at(step: int, peak: float, warmup: int, total: int, min_ratio: float = 0.0) -> float:
    """Learning rate after `step` optimizer steps.

    Linear from 0 to `peak` over `warmup` steps, then a half cosine from `peak` down to
    `min_ratio * peak` at `total`; constant at the floor past `total`.
    """
    if step < warmup:
        return peak * step / warmup
    if total <= warmup:  # no room for a decay phase: hold the peak
        return peak
    progress = min(1.0, (step - warmup) / (total - warmup))
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
    return peak * (min_ratio + (1.0 - min_ratio) * cosine)


def module_lrs(cfg: AtlasConfig, world_size: int) -> dict[str, float]:
    """Peak LR of each policy module: `training.module_lr` or `learning_rate`, times the
    world-size rule (`cfg.lr_scale`)."""
    t, scale = cfg.training, cfg.lr_scale(world_size)
    return {name: t.module_lr.get(name, t.learning_rate) * scale for name in POLICY_MODULES}


def build_optimizer(
    policy: AtlasVLAPolicy, cfg: AtlasConfig, world_size: int, device: torch.device
) -> torch.optim.AdamW:
    """AdamW over the trainable parameters only, grouped by the policy (`param_groups`).

    Each group's `lr` is its peak LR already multiplied by the world-size rule (`cfg.lr_scale`);
    `initial_lr` is set from it by the scheduler. Fused kernels on CUDA, foreach elsewhere.
    """
    groups = policy.param_groups(module_lrs(cfg, world_size), cfg.training.weight_decay)
    if not groups or not any(p.requires_grad for g in groups for p in g["params"]):
        raise ValueError(
            "the policy has no trainable parameters: every module is frozen "
            "(unfreeze one, e.g. --set model.vggt.freeze=false, or train the heads)"
        )
    t = cfg.training
    kwargs: dict[str, Any] = {
        "betas": tuple(t.betas),
        "eps": t.adam_eps,
        "weight_decay": t.weight_decay,
    }
    # Fused AdamW is the fastest CUDA path; foreach batches the per-parameter kernels elsewhere.
    if device.type == "cuda":
        kwargs["fused"] = True
    else:
        kwargs["foreach"] = True
    optimizer = torch.optim.AdamW(groups, lr=t.learning_rate * cfg.lr_scale(world_size), **kwargs)
    for g in optimizer.param_groups:
        n = sum(p.numel() for p in g["params"])
        log.info(
            "Optimizer group %-16s %10d params  peak lr %.3g  weight decay %g",
            g.get("name", "?"),
            n,
            g["lr"],
            g["weight_decay"],
        )
    return optimizer


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: AtlasConfig, total_steps: int
) -> LambdaLR:
    """Warmup + cosine as a `LambdaLR` multiplier on each group's peak LR.

    A `functools.partial` (not a lambda) so `LambdaLR.state_dict()` stays small and loading a
    checkpoint never overwrites the schedule's shape with the old run's values.
    """
    t = cfg.training
    if t.warmup_steps >= total_steps:  # a short trial run of a long config: allowed, but said
        log.warning(
            "training.warmup_steps=%d is not below the run's %d optimizer steps: the learning "
            "rate rises linearly for the whole run, its last step uses %.0f%% of the peak and the "
            "cosine decay never starts; lower warmup_steps (e.g. %d) to reach the peak",
            t.warmup_steps,
            total_steps,
            100 * (total_steps - 1) / t.warmup_steps,
            max(1, total_steps // 10),
        )
    multiplier = functools.partial(
        lr_at, peak=1.0, warmup=t.warmup_steps, total=total_steps, min_ratio=t.min_lr_ratio
    )
    return LambdaLR(optimizer, lr_lambda=multiplier)


def current_lrs(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """LR of every group by its name (`lr/<name>`), for logging."""
    return {f"lr/{g.get('name', i)}": float(g["lr"]) for i, g in enumerate(optimizer.param_groups)}
