"""The policy contract a rollout consumes, reference policies, and a picklable spec.

Reference policies: `RandomPolicy` (smoke tests), `MeanActionPolicy` (always the mean training
action of a checkpoint: what a policy that learned nothing from its inputs does) and, in the
synthetic world only, the scripted expert (`atlas.eval.synthetic_env.ExpertPolicy`).

Contract (implemented by `atlas.models.policy.AtlasVLAPolicy`):

    policy.reset()                          # clear history between episodes
    policy.predict_action(observation)      # -> float [H, 7] actions in robot units, H >= 1

where observation = {"images": {camera: uint8 [h, w, 3]}, "instruction": str, "state": float32 [8]}
(see `atlas.eval.libero_env`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from atlas.eval.synthetic_env import ExpertPolicy

log = logging.getLogger(__name__)

ACTION_DIM = 7
PolicyKind = Literal["checkpoint", "random", "expert", "mean-action", "server"]
CHECKPOINT_KINDS = ("checkpoint", "mean-action")  # kinds read from --checkpoint


class PolicyOutputError(ValueError):
    """The policy returned something that is not an action chunk [H, 7] of finite values."""


class CheckpointMismatchError(ValueError):
    """The checkpoint cannot act in this environment (cameras, action width)."""


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


class MeanActionPolicy:
    """The checkpoint's mean training action (from its normalization.json), every step: [1, 7]."""

    def __init__(self, checkpoint: str | Path) -> None:
        stats = json.loads((Path(checkpoint) / "normalization.json").read_text())["stats"]
        self.action = np.asarray(stats["action"]["mean"], dtype=np.float32)[None]

    def reset(self) -> None:
        """Stateless."""

    def predict_action(self, observation: dict[str, Any]) -> np.ndarray:
        return self.action.copy()


def check_checkpoint(checkpoint: str | Path, cameras: tuple[str, ...]) -> None:
    """Refuse, before any episode, a checkpoint that cannot act in an env offering `cameras`.

    Reads only config.json (the cameras the policy was trained on) and normalization.json (the
    action width); raises CheckpointMismatchError or FileNotFoundError naming the file.
    """
    root = Path(checkpoint)
    for name in ("config.json", "normalization.json"):
        if not (root / name).is_file():
            raise FileNotFoundError(
                f"{root / name}: missing (--checkpoint needs an exported policy)"
            )
    from atlas.data.lerobot_meta import libero_camera
    from atlas.models.config import read_policy_config  # the model stack stays out of workers

    saved = json.loads((root / "config.json").read_text())
    trained = list(read_policy_config(saved, str(root / "config.json")).cameras)
    # A LeRobot feature key stands for its LIBERO camera (see with_libero_cameras).
    missing = [c for c in trained if libero_camera(c) not in cameras]
    if missing:
        raise CheckpointMismatchError(
            f"{root / 'config.json'}: the policy was trained on cameras {trained}, but this env "
            f"renders only {list(cameras)} ({missing} missing)"
        )
    width = len(json.loads((root / "normalization.json").read_text())["stats"]["action"]["mean"])
    if width != ACTION_DIM:
        raise CheckpointMismatchError(
            f"{root / 'normalization.json'}: the policy's actions have {width} values; a rollout "
            f"needs {ACTION_DIM} (xyz, roll-pitch-yaw, gripper)"
        )


@dataclass(frozen=True)
class PolicySpec:
    """How to build a policy inside a worker process (picklable, unlike a loaded model).

    kind: "checkpoint" loads `AtlasVLAPolicy.from_pretrained(checkpoint)`; "random" builds a
    `RandomPolicy(chunk_size, seed)`; "mean-action" a `MeanActionPolicy(checkpoint)`; "expert"
    the synthetic world's scripted expert; "server" connects a `RemotePolicy` to the policy
    server at `server` (ws://HOST:PORT), whose metadata names the policy it serves (`served`).
    """

    kind: PolicyKind = "checkpoint"
    checkpoint: str | None = None
    chunk_size: int = 8
    seed: int = 0
    server: str | None = None
    served: str | None = None
    api_key: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.kind in CHECKPOINT_KINDS and not self.checkpoint:
            raise ValueError(
                f"--policy {self.kind} needs --checkpoint DIR (or use --policy random)"
            )
        if self.kind == "server" and not self.server:
            raise ValueError("a served policy needs --server ws://HOST:PORT")

    @property
    def name(self) -> str:
        """A short identity recorded with the results (a resumed run must use the same one)."""
        if self.kind == "server":
            return f"server:{self.server} ({self.served})"
        return f"{self.kind}:{self.checkpoint}" if self.kind in CHECKPOINT_KINDS else self.kind

    def __call__(self) -> RolloutPolicy:
        if self.kind == "random":
            return RandomPolicy(self.chunk_size, self.seed)
        if self.kind == "mean-action":
            return MeanActionPolicy(self.checkpoint)
        if self.kind == "expert":
            return ExpertPolicy()
        if self.kind == "server":
            from atlas.eval.remote_policy import RemotePolicy

            remote = RemotePolicy(self.server or "", self.api_key)
            return with_libero_cameras(remote, remote.metadata.get("cameras", []))
        # Imported here: the model stack is heavy and owned by atlas.models.
        from atlas.models.policy import AtlasVLAPolicy

        policy = AtlasVLAPolicy.from_pretrained(self.checkpoint)
        log.info("loaded policy from %s (cameras %s)", self.checkpoint, policy.config.cameras)
        return with_libero_cameras(policy.eval())  # once: predict_action never switches modes


def with_libero_cameras(policy: Any, cameras: Sequence[str] | None = None) -> RolloutPolicy:
    """`policy`, fed the simulator's cameras under the names it was trained with.

    A policy trained on a LeRobotDataset may name its cameras by feature key
    (observation.images.image, ...); each must stand for a LIBERO camera (CAMERA_ALIASES).
    `cameras`: the policy's camera names (default: its config's; a served policy's metadata).
    """
    from atlas.data.lerobot_meta import CAMERA_ALIASES, libero_camera

    cameras = list(policy.config.cameras if cameras is None else cameras)
    names = {cam: libero_camera(cam) for cam in cameras}
    unknown = [cam for cam, sim in names.items() if sim is None]
    if unknown:
        raise ValueError(
            f"policy cameras {unknown} are not LIBERO cameras {sorted(CAMERA_ALIASES)} "
            "nor their LeRobot keys"
        )
    if all(cam == sim for cam, sim in names.items()):
        return policy
    return RenamedCameras(policy, names)  # type: ignore[arg-type]


class RenamedCameras:
    """A policy whose camera names differ from the simulator's: renames the observation images."""

    def __init__(self, policy: Any, names: dict[str, str]) -> None:
        self.policy, self.names = policy, names  # policy camera -> simulator camera

    def reset(self) -> None:
        self.policy.reset()

    def predict_action(self, observation: dict[str, Any]) -> np.ndarray:
        images = observation["images"]
        renamed = {cam: images[sim] for cam, sim in self.names.items()}
        return self.policy.predict_action({**observation, "images": renamed})

    def __getattr__(self, name: str) -> Any:  # config, normalizer, ... of the wrapped policy
        if name == "policy":  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.policy, name)
