"""The `data.blank_images` ablation: black frames in training batches and in predict_action."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from atlas.cache.identity import preprocessing_inputs
from atlas.config.schema import AtlasConfig
from atlas.data.build import build_datasets
from atlas.data.normalization import Normalizer
from atlas.models.policy import build_policy
from atlas.models.testing import tiny_policy_config


def _config(path: Path, blank: bool) -> AtlasConfig:
    cfg = AtlasConfig()
    cfg.data = dataclasses.replace(
        cfg.data,
        paths=[str(path)],
        cameras=["agentview_rgb"],
        image_size=14,
        num_workers=0,
        val_split=0.25,
        blank_images=blank,
    )
    return cfg


def test_training_samples_are_black_and_the_rest_unchanged(synth_dir: Path) -> None:
    seeing, _, _ = build_datasets(_config(synth_dir, blank=False))
    blind, _, _ = build_datasets(_config(synth_dir, blank=True))
    a, b = seeing[3], blind[3]
    assert a["images"].float().std() > 0 and torch.count_nonzero(b["images"]) == 0
    assert a["images"].shape == b["images"].shape
    torch.testing.assert_close(a["actions"], b["actions"])
    assert a["instruction"] == b["instruction"]


def test_cache_key_changes_only_when_set(synth_dir: Path) -> None:
    assert "blank_images" not in preprocessing_inputs(_config(synth_dir, blank=False))
    assert preprocessing_inputs(_config(synth_dir, blank=True))["blank_images"] is True


def test_predict_action_does_not_see_the_images() -> None:
    def group(dim: int) -> dict[str, list[float]]:
        return {
            "mean": [0.0] * dim,
            "std": [1.0] * dim,
            "min": [-1.0] * dim,
            "max": [1.0] * dim,
            "q01": [-1.0] * dim,
            "q99": [1.0] * dim,
        }

    norm = Normalizer({"action": group(7), "proprio": group(8), "num_samples": 10}, "q99")
    torch.manual_seed(0)
    policy = build_policy(tiny_policy_config(data={"blank_images": True}), norm)
    rng = np.random.default_rng(0)
    chunks = []
    for _ in range(2):  # two different images, same instruction and state
        obs = {
            "images": {"agentview_rgb": rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)},
            "instruction": "pick up the black bowl",
            "state": np.zeros(8, dtype=np.float32),
        }
        policy.reset()
        chunks.append(policy.predict_action(obs))
    np.testing.assert_array_equal(chunks[0], chunks[1])
    assert torch.count_nonzero(policy._history[0]) == 0
