"""Fake batches and tiny configs for tests and benchmarks (no data, no downloads).

`make_fake_batch(config, B)` follows the batch contract of docs/ARCHITECTURE.md exactly, so a policy
that trains on it trains on the real DataLoader.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from atlas.config.loader import from_dict
from atlas.config.schema import AtlasConfig
from atlas.models.config import PolicyConfig, policy_config

# The CPU-sized VGGT of atlas.models.vggt.VGGT_PRESETS (width 64, 4 layers, 2 DINO blocks).
TEST_VGGT_PRESET = "tiny"

FAKE_INSTRUCTIONS = (
    "pick up the black bowl and place it on the plate",
    "open the top drawer of the cabinet",
    "put the cream cheese in the bowl",
)


def make_fake_batch(config: PolicyConfig, batch_size: int, seed: int = 0) -> dict[str, Any]:
    """A random batch for a policy built from `config`: images uint8 [B, S, 3, H, W] (S =
    cameras x history), instruction list[str], actions [B, Hc, 7] (gripper +-1), action_mask
    [B, Hc] (the last sample's chunk runs past its episode end), proprio [B, 8],
    task/episode/timestep int64 [B].
    """
    g = torch.Generator().manual_seed(seed)
    hc, S, size = config.action_head.chunk_size, config.num_frames, config.image_size
    actions = torch.randn(batch_size, hc, 7, generator=g).clamp(-1, 1)
    actions[..., 6] = torch.randint(0, 2, (batch_size, hc), generator=g).float() * 2 - 1
    mask = torch.ones(batch_size, hc, dtype=torch.bool)
    mask[-1, hc // 2 + 1 :] = False  # an episode end inside the chunk
    task = torch.arange(batch_size) % len(FAKE_INSTRUCTIONS)
    return {
        "images": torch.randint(
            0, 256, (batch_size, S, 3, size, size), generator=g, dtype=torch.uint8
        ),
        "instruction": [FAKE_INSTRUCTIONS[i] for i in task.tolist()],
        "actions": actions,
        "action_mask": mask,
        "proprio": torch.randn(batch_size, 8, generator=g),
        "task_index": task,
        "episode_index": torch.arange(batch_size),
        "timestep": torch.zeros(batch_size, dtype=torch.int64),
    }


def tiny_config(
    language: str = "minilm", data: dict[str, Any] | None = None, **model_overrides: Any
) -> AtlasConfig:
    """The smallest sensible policy config: tiny VGGT at 56 px, one camera, fusion width 32.

    `language` is "minilm" or a local model folder; `data` updates the data section and
    `model_overrides` the model sections, e.g. tiny_config(action_head={"chunk_size": 8}).
    """
    model: dict[str, Any] = {
        "vggt": {"preset": TEST_VGGT_PRESET, "checkpoint": None},
        "language_encoder": {"name_or_path": language, "pooling": "mean", "dtype": "fp32"},
        "geometry": {"tokens_per_frame": 4},
        "fusion": {"dim": 32, "depth": 1, "num_heads": 4, "dropout": 0.0},
        "action_head": {"chunk_size": 1, "hidden_dim": 32},
    }
    for section, values in model_overrides.items():
        model.setdefault(section, {}).update(values)
    data_section = {"cameras": ["agentview_rgb"], "image_size": 56, "history": 1, **(data or {})}
    return from_dict(AtlasConfig, {"model": model, "data": data_section})


def stats_group(low: list[float], high: list[float]) -> dict[str, list[float]]:
    """One group of a normalizer's stats (zero mean, unit std) spanning [low, high] per dim."""
    n = len(low)
    return {"mean": [0.0] * n, "std": [1.0] * n, "min": low, "max": high, "q01": low, "q99": high}


def export_tiny_policy(
    path: str | Path,
    seed: int = 0,
    cameras: tuple[str, ...] = ("agentview_rgb", "eye_in_hand_rgb"),
    **model_overrides: Any,
) -> Path:
    """Save a random-weight tiny policy that acts like a LIBERO one (both cameras, history 2,
    chunks of 4, proprio, a q99 normalizer with non-trivial ranges) to `path`; for serving and
    rollout tests. `model_overrides` update the model sections as in `tiny_config`.
    """
    from atlas.data.normalization import Normalizer
    from atlas.models.policy import build_policy

    def group(dim: int) -> dict[str, list[float]]:
        ranks = range(dim)
        return stats_group([-0.5 - 0.1 * i for i in ranks], [0.5 + 0.2 * i for i in ranks])

    model: dict[str, Any] = {"action_head": {"chunk_size": 4, "use_proprio": True}}
    for section, values in model_overrides.items():
        model.setdefault(section, {}).update(values)
    cfg = tiny_config(data={"cameras": list(cameras), "history": 2}, **model)
    stats = {"action": group(7), "proprio": group(8), "num_samples": 10}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        policy = build_policy(policy_config(cfg), Normalizer(stats, "q99"))
    policy.save_pretrained(path)
    return Path(path)


def tiny_policy_config(
    language: str = "minilm", data: dict[str, Any] | None = None, **model_overrides: Any
) -> PolicyConfig:
    """The policy part of `tiny_config` (same arguments)."""
    return policy_config(tiny_config(language, data, **model_overrides))
