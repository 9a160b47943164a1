"""`search_episode` prefers a grasp whose phases all end at their waypoints over one that stalls.

The scene is a kinematic stand-in (tests/sim/test_expert.py's world) behind the small part of the
`TaskScene` / `ControlEnv` interface the search uses.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from atlas.sim.episode import search_episode
from atlas.sim.expert import ObjectBox

RIM = 0.047


class _Scene:
    """A bowl at `obj`, a plate at `target`; the end effector cannot pass y = `y_max`."""

    def __init__(self, obj: list[float], target: list[float], y_max: float) -> None:
        self.start_obj, self.target, self.y_max = np.array(obj), np.array(target), y_max
        self.env = self
        self.parsed_problem = {"goal_state": [["On", "bowl", "plate"]]}

    def restore(self, state: np.ndarray) -> dict[str, Any]:
        self.eef, self.quat = np.array([-0.2, 0.0, 1.17]), np.array([1.0, 0.0, 0.0, 0.0])
        self.obj, self.attached, self.t = self.start_obj.copy(), None, 0
        return self._obs()

    def object_box(self, name: str) -> ObjectBox:
        half = np.array([0.055, 0.055, 0.02])  # a bowl: its grasps do not depend on the box
        return ObjectBox(-half, half)

    def _obs(self) -> dict[str, np.ndarray]:
        return {
            "robot0_eef_pos": self.eef.copy(),
            "robot0_eef_quat": self.quat.copy(),
            "robot0_joint_pos": np.zeros(7),
            "robot0_gripper_qpos": np.zeros(2),
            "bowl_pos": self.obj.copy(),
            "plate_pos": self.target.copy(),
        }

    def get_sim_state(self) -> np.ndarray:
        return np.concatenate([[self.t], self.eef, self.obj])

    def step(self, action: np.ndarray) -> tuple[dict[str, Any], float, bool, dict]:
        self.t += 1
        self.eef = self.eef + 0.01 * action[:3]
        self.eef[1] = min(self.eef[1], self.y_max)
        rim = np.linalg.norm((self.eef - self.obj)[:2])
        if action[6] > 0 and self.attached is None and abs(rim - RIM) < 0.02:
            self.attached = self.obj - self.eef
        released = action[6] < 0 and self.attached is not None
        if released:
            self.obj, self.attached = self.obj * [1, 1, 0] + [0, 0, self.target[2] + 0.01], None
        if self.attached is not None:
            self.obj = self.eef + self.attached
        on_plate = np.linalg.norm((self.obj - self.target)[:2]) < 0.02
        return self._obs(), 0.0, bool(released and on_plate), {}


def test_the_first_clean_grasp_wins_over_an_earlier_one_that_stalls() -> None:
    # Facing the robot (side 180) the rim is 2 cm past the reach, so is the far flank (90);
    # the near flank (270, rim at y = 0.253) is reachable.
    scene = _Scene(obj=[-0.05, 0.30, 0.90], target=[0.06, 0.2, 0.90], y_max=0.28)
    episode = search_episode(scene, np.zeros(1), "", max_steps=300)
    assert episode is not None
    assert (episode.option.side, episode.attempts, episode.stalled) == (270.0, 3, ())


def test_a_stalled_success_is_kept_when_no_grasp_runs_clean() -> None:
    # Every rim point lies past the reach: the grasps that still succeed stall, the first of
    # them (the far flank, 90; facing the robot misses the rim) is kept after all four tries.
    scene = _Scene(obj=[-0.05, 0.30, 0.90], target=[0.06, 0.2, 0.90], y_max=0.24)
    episode = search_episode(scene, np.zeros(1), "", max_steps=300)
    assert episode is not None
    assert (episode.option.side, episode.attempts, episode.stalled) == (90.0, 4, ("above", "down"))


def test_the_grasp_facing_the_robot_is_first_when_it_runs_clean() -> None:
    scene = _Scene(obj=[-0.05, 0.20, 0.90], target=[0.06, 0.2, 0.90], y_max=1.0)
    episode = search_episode(scene, np.zeros(1), "", max_steps=300)
    assert episode is not None
    assert (episode.option.side, episode.attempts, episode.stalled) == (180.0, 1, ())
