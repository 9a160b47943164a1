"""The policy contract a rollout consumes, a random policy for smoke tests, and a picklable spec.

Contract (implemented by `atlas.models.policy.AtlasVLAPolicy`):

    policy.reset()                          # clear history between episodes
    policy.predict_action(observation)      # -> float [H, 7] actions in robot units, H >= 1

where observation = {"images": {camera: uint8 [h, w, 3]}, "instruction": str, "state": float32 [8]}
(see `atlas.eval.libero_env`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

log = logging.getLogger(__name__)

ACTION_DIM = 7


@runtime_checkable
class RolloutPolicy(Protocol):
    """What the rollout loop needs from a policy."""

    def reset(self) -> None: ...

    def predict_action(self, observation: dict[str, Any]) -> np.ndarray: ...


class RandomPolicy:
    """Uniform random actions in [-1, 1]^7, `chunk_size` at a time: float32 [chunk_size, 7]."""

    def __init__(self, chunk_size: int = 8, seed: int = 0) -> None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.chunk_size = chunk_size
        self._rng = np.random.default_rng(seed)

    def reset(self) -> None:
        """Nothing to clear; the random stream continues so episodes differ."""

    def predict_action(self, observation: dict[str, Any]) -> np.ndarray:
        return self._rng.uniform(-1.0, 1.0, (self.chunk_size, ACTION_DIM)).astype(np.float32)


@dataclass(frozen=True)
class PolicySpec:
    """How to build a policy inside a worker process (picklable, unlike a loaded model).

    kind: "checkpoint" loads `AtlasVLAPolicy.from_pretrained(checkpoint)`; "random" builds a
    `RandomPolicy(chunk_size, seed)`.
    """

    kind: Literal["checkpoint", "random"] = "checkpoint"
    checkpoint: str | None = None
    chunk_size: int = 8
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind == "checkpoint" and not self.checkpoint:
            raise ValueError("a checkpoint policy needs --checkpoint DIR (or use --policy random)")

    @property
    def name(self) -> str:
        """A short identity recorded with the results (a resumed run must use the same one)."""
        return "random" if self.kind == "random" else f"checkpoint:{self.checkpoint}"

    def __call__(self) -> RolloutPolicy:
        if self.kind == "random":
            return RandomPolicy(self.chunk_size, self.seed)
        # Imported here: the model stack is heavy and owned by atlas.models.
        from atlas.models.policy import AtlasVLAPolicy

        policy = AtlasVLAPolicy.from_pretrained(self.checkpoint)
        cameras = list(policy.config.data.cameras)
        known = {"agentview_rgb", "eye_in_hand_rgb"}
        if not set(cameras) <= known:
            raise ValueError(f"policy cameras {cameras} are not all LIBERO cameras {sorted(known)}")
        log.info("loaded policy from %s (cameras %s)", self.checkpoint, cameras)
        return policy
