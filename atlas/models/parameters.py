"""Freezing, optimizer parameter groups and parameter counts of the policy's modules.

Module names are `atlas.config.schema.POLICY_MODULES`. A frozen module has requires_grad False on
every parameter and stays in eval mode; it is absent from the optimizer. Each trainable module
gives up to two AdamW groups with the module's peak LR (the trainer passes `training.module_lr`,
else `training.learning_rate`, times the world-size scale: atlas.training.optim.module_lrs): one
with weight decay, one without for parameters that decay should not shrink (norms, biases,
learned tokens and embeddings).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from torch import nn

from atlas.config.schema import POLICY_MODULES

log = logging.getLogger(__name__)

_NO_DECAY_OWNERS = (nn.Embedding, nn.LayerNorm, nn.GroupNorm, nn.BatchNorm2d)


def set_frozen(module: nn.Module, frozen: bool = True) -> None:
    """Frozen: requires_grad False and eval mode (dropout off, norms use running stats)."""
    module.requires_grad_(not frozen)
    if frozen:
        module.eval()


def freeze_prefixes(module: nn.Module, prefixes: Iterable[str]) -> int:
    """Set requires_grad False on parameters whose name starts with a prefix; returns the count."""
    prefixes = tuple(prefixes)
    n = 0
    for name, p in module.named_parameters():
        if prefixes and name.startswith(prefixes) and p.requires_grad:
            p.requires_grad_(False)
            n += p.numel()
    return n


def no_weight_decay(owner: nn.Module, leaf: str, ndim: int) -> bool:
    """Norm weights, biases, embeddings, and parameters registered directly on a module.

    The last covers learned tokens, queries, positional/slot embeddings and LayerScale gammas:
    anything that is not the `weight` of a layer.
    """
    if ndim < 2 or isinstance(owner, _NO_DECAY_OWNERS):
        return True
    return leaf != "weight"


def module_param_groups(
    name: str, module: nn.Module, lr: float, weight_decay: float
) -> list[dict[str, Any]]:
    """Trainable parameters of one module as (decay, no-decay) AdamW groups; empty if frozen."""
    decay, no_decay = [], []
    for owner in module.modules():
        for leaf, p in owner.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            (no_decay if no_weight_decay(owner, leaf, p.ndim) else decay).append(p)
    groups = []
    if decay:
        groups.append({"name": name, "params": decay, "lr": lr, "weight_decay": weight_decay})
    if no_decay:
        groups.append({"name": name, "params": no_decay, "lr": lr, "weight_decay": 0.0})
    return groups


def param_groups(
    policy: nn.Module, module_lrs: Mapping[str, float], weight_decay: float
) -> list[dict[str, Any]]:
    """AdamW groups of every trainable module in POLICY_MODULES order (see module doc).

    module_lrs: the peak LR of each module (every name of POLICY_MODULES).
    """
    missing = [name for name in POLICY_MODULES if name not in module_lrs]
    if missing:
        raise ValueError(f"param_groups: no learning rate for {missing}")
    groups: list[dict[str, Any]] = []
    for name in POLICY_MODULES:
        module = getattr(policy, name)
        groups += module_param_groups(name, module, module_lrs[name], weight_decay)
    return groups


def parameter_counts(policy: nn.Module) -> dict[str, dict[str, int]]:
    """{module: {"total": n, "trainable": n}} for POLICY_MODULES (works on the meta device)."""
    counts = {}
    for name in POLICY_MODULES:
        params = list(getattr(policy, name).parameters())
        counts[name] = {
            "total": sum(p.numel() for p in params),
            "trainable": sum(p.numel() for p in params if p.requires_grad),
        }
    return counts


def format_parameter_counts(counts: dict[str, dict[str, int]]) -> str:
    """A fixed-width table: module, total, trainable, frozen; plus the sum."""
    rows = [(k, v["total"], v["trainable"]) for k, v in counts.items()]
    rows.append(("all", sum(r[1] for r in rows), sum(r[2] for r in rows)))
    lines = [f"{'module':<18}{'total':>16}{'trainable':>16}{'frozen':>16}"]
    for name, total, trainable in rows:
        lines.append(f"{name:<18}{total:>16,}{trainable:>16,}{total - trainable:>16,}")
    return "\n".join(lines)


def log_parameter_counts(policy: nn.Module) -> dict[str, dict[str, int]]:
    """Log the per-module table (the trainer calls this at start); returns the counts."""
    counts = parameter_counts(policy)
    log.info("Policy parameters:\n%s", format_parameter_counts(counts))
    return counts
