"""A policy trained on LeRobot camera keys is fed the simulator's LIBERO cameras in rollouts."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from atlas.eval.policies import RenamedCameras, with_libero_cameras


class Recorder:
    """Stands in for AtlasVLAPolicy: records the observation predict_action receives."""

    def __init__(self, cameras: list[str]) -> None:
        self.config = SimpleNamespace(cameras=cameras)  # a PolicyConfig's cameras
        self.seen: dict[str, Any] = {}
        self.resets = 0

    def reset(self) -> None:
        self.resets += 1

    def predict_action(self, observation: dict[str, Any]) -> np.ndarray:
        self.seen = observation
        return np.zeros((1, 7), np.float32)


def _sim_observation() -> dict[str, Any]:
    images = {"agentview_rgb": np.full((4, 4, 3), 1, np.uint8)}
    images["eye_in_hand_rgb"] = np.full((4, 4, 3), 2, np.uint8)
    return {"images": images, "instruction": "open the drawer", "state": np.zeros(8, np.float32)}


def test_lerobot_keys_get_the_matching_simulator_cameras() -> None:
    inner = Recorder(["observation.images.wrist_image", "observation.images.image"])
    policy = with_libero_cameras(inner)
    assert isinstance(policy, RenamedCameras) and policy.config is inner.config
    policy.reset()
    policy.predict_action(_sim_observation())
    assert inner.resets == 1 and inner.seen["instruction"] == "open the drawer"
    assert inner.seen["images"]["observation.images.wrist_image"][0, 0, 0] == 2
    assert inner.seen["images"]["observation.images.image"][0, 0, 0] == 1


def test_libero_names_pass_through_and_unknown_names_are_refused() -> None:
    plain = Recorder(["agentview_rgb", "wrist_image"])  # openpi's key for the wrist camera
    assert isinstance(with_libero_cameras(plain), RenamedCameras)
    same = Recorder(["agentview_rgb"])
    assert with_libero_cameras(same) is same
    with pytest.raises(ValueError, match="observation.images.top"):
        with_libero_cameras(Recorder(["observation.images.top"]))
