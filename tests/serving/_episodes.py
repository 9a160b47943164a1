"""Observations and in-process reference actions shared by the serving tests."""

from __future__ import annotations

import numpy as np

INSTRUCTION = "open the top drawer of the cabinet"


def observations(n: int, seed: int) -> list[dict]:
    """n LIBERO-like observations in the policy's own format (128 px frames, 8-value state)."""
    rng = np.random.default_rng(seed)
    return [
        {
            "images": {
                cam: rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)
                for cam in ("agentview_rgb", "eye_in_hand_rgb")
            },
            "instruction": INSTRUCTION,
            "state": rng.uniform(-1, 1, 8).astype(np.float32),
        }
        for _ in range(n)
    ]


def in_process(policy, episode: list[dict]) -> list[np.ndarray]:
    """The actions of one episode predicted in process (history reset first)."""
    policy.reset()
    return [policy.predict_action(obs) for obs in episode]
