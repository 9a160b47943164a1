"""Range and name checks of the config tree that need more than one comparison: AdamW's numbers,
per-module learning rates, the VGGT preset with its layer indices, and what training from the
feature cache rules out (`AtlasConfig.validate` calls them; each returns (dotted key, problem)
pairs like it)."""

from __future__ import annotations

import difflib
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from atlas.config.vggt import VGGT_PRESETS

if TYPE_CHECKING:  # the schema imports this module
    from atlas.config.schema import AtlasConfig, TrainingConfig, VGGTBackboneConfig

RATE = "must be a finite number > 0 (e.g. 1e-4)"


def not_rate(x: float) -> bool:
    """True unless `x` is a finite positive number (NaN fails every comparison, hence `not`)."""
    return not 0.0 < x < math.inf


def optimizer_problems(t: TrainingConfig, modules: Sequence[str]) -> list[tuple[str, str]]:
    """AdamW's numbers in their ranges, and every per-module LR naming one of `modules`."""
    rules = [
        (len(t.betas) != 2, "training.betas", "needs exactly two values"),
        (
            not all(0.0 <= b < 1.0 for b in t.betas),
            "training.betas",
            f"each must be in [0, 1) (AdamW's moment decay rates), got {t.betas}",
        ),
        (not_rate(t.adam_eps), "training.adam_eps", "must be a finite number > 0"),
        (
            t.max_grad_norm is not None and not_rate(t.max_grad_norm),
            "training.max_grad_norm",
            "must be a finite number > 0, or null for no clipping",
        ),
    ]
    problems = [(key, msg) for bad, key, msg in rules if bad]
    for name, lr in t.module_lr.items():
        if name not in modules:
            problems.append((f"training.module_lr.{name}", f"not one of {tuple(modules)}"))
        elif not_rate(lr):
            problems.append((f"training.module_lr.{name}", f"{RATE}, got {lr}"))
    return problems


def backbone_problems(vggt: VGGTBackboneConfig) -> list[tuple[str, str]]:
    """The preset name (with the closest one) and the layer indices against its depth."""
    if vggt.preset not in VGGT_PRESETS:
        close = difflib.get_close_matches(vggt.preset, VGGT_PRESETS, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        known = ", ".join(sorted(VGGT_PRESETS))
        return [("model.vggt.preset", f"unknown preset '{vggt.preset}'{hint}; known: {known}")]
    depth = VGGT_PRESETS[vggt.preset].depth
    bad = [i for i in vggt.layers if not -depth <= i < depth]
    if not vggt.layers or bad:
        return [
            (
                "model.vggt.layers",
                f"{vggt.layers}: preset '{vggt.preset}' has {depth} aggregator layers, so each "
                f"index must be in [-{depth}, {depth - 1}] (negative counts from the end) and "
                "at least one is needed",
            )
        ]
    return []


def cache_problems(cfg: AtlasConfig) -> list[tuple[str, str]]:
    """What `data.use_feature_cache` rules out: the cache stores the outputs of frozen backbones
    for fixed (or K cached augmented) frames, and no pixels."""
    d, m = cfg.data, cfg.model
    if not d.use_feature_cache:
        return []
    rules = [
        (
            not m.vggt.freeze,
            "data.use_feature_cache",
            "needs a frozen backbone (model.vggt.freeze: true)",
        ),
        (
            m.geometry.keypoints > 0,
            "model.geometry.keypoints",
            "reads the images, which a feature cache does not hold: set it to 0 or "
            "data.use_feature_cache: false",
        ),
        (
            not m.language_encoder.freeze,
            "data.use_feature_cache",
            "needs a frozen language encoder (model.language_encoder.freeze: true)",
        ),
        (
            d.augmentation.enabled and d.augmentation.num_cached_variants < 1,
            "data.augmentation.num_cached_variants",
            "must be >= 1 to train from the feature cache with augmentation on "
            "(K augmented variants per sample are cached), or turn augmentation off",
        ),
        (
            cfg.eval.rollout_interval > 0,
            "eval.rollout_interval",
            "must be 0 with data.use_feature_cache: rollouts need the backbones, which a "
            "run from the cache never loads (evaluate the exported policy afterwards)",
        ),
    ]
    return [(key, msg) for bad, key, msg in rules if bad]
