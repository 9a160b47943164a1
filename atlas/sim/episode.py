"""Scripted episodes: search the grasp options render-free, then render the chosen one.

`search_episode` runs the expert from a settled layout once per `GraspOption` in the render-free
env (set back to the same state each time) and keeps the first attempt whose `done` (the task's
BDDL goal) came true and whose phases all ended at their waypoints; a successful attempt that
stalled (`ScriptedExpert.stalled`) is kept only when no option runs clean, because a policy cannot
imitate a phase change that nothing in the scene shows. Along the way it records what the released
demos store per step: the simulator state *before* the action, the action, and the proprio read
from the same observation.

`render_episode` then loads the layout's model into the camera env and re-renders every recorded
state with `set_state`, which reproduces the run exactly; replaying the actions would not (MuJoCo's
solver warm start is not part of the state, so an open-loop replay drifts).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from atlas.eval.libero_env import CAMERA_KEYS, quat_to_axis_angle
from atlas.sim.expert import Goal, GraspOption, ScriptedExpert, grasp_options
from atlas.sim.scene import TaskScene


@dataclass
class Episode:
    """One successful scripted run, T steps; every array float64.

    states [T, D], actions [T, 7], joints [T, 7], eef_pos [T, 3], eef_quat [T, 4] (x, y, z, w),
    gripper [T, 2] (finger qpos), final_state [D]; `option` is the grasp that worked,
    `attempts` how many were tried, `stalled` the phases of the kept attempt that ended on their
    step limit (empty for a clean run).
    """

    model_xml: str
    option: GraspOption
    attempts: int
    states: np.ndarray
    actions: np.ndarray
    joints: np.ndarray
    eef_pos: np.ndarray
    eef_quat: np.ndarray
    gripper: np.ndarray
    final_state: np.ndarray  # [D] after the last action, where the goal holds
    stalled: tuple[str, ...] = ()
    images: dict[str, np.ndarray] = field(default_factory=dict)  # camera -> uint8 [T, H, W, 3]

    @property
    def num_steps(self) -> int:
        return len(self.actions)

    @property
    def ee_states(self) -> np.ndarray:
        """[T, 6] eef position + axis-angle, as the released `obs/ee_states`."""
        aa = np.stack([quat_to_axis_angle(q) for q in self.eef_quat])
        return np.concatenate([self.eef_pos, aa], axis=1)


def _attempt(
    scene: TaskScene, goal: Goal, option: GraspOption, obs: dict[str, Any], max_steps: int
) -> dict[str, list] | None:
    """One run of the expert from the restored start (`obs`); the per-step records, or None if
    it did not succeed."""
    expert = ScriptedExpert(goal, option)
    rec: dict[str, list] = {k: [] for k in ("states", "actions", "joints", "pos", "quat", "grip")}
    for _ in range(max_steps):
        if expert.finished:
            return None
        action = expert.act(obs)
        rec["states"].append(scene.env.get_sim_state().copy())
        rec["actions"].append(action)
        rec["joints"].append(obs["robot0_joint_pos"])
        rec["pos"].append(obs["robot0_eef_pos"])
        rec["quat"].append(obs["robot0_eef_quat"])
        rec["grip"].append(obs["robot0_gripper_qpos"])
        obs, _, done, _ = scene.env.step(action)
        if done:
            rec["final"] = [scene.env.get_sim_state().copy()]
            rec["stalled"] = list(expert.stalled)
            return rec
    return None


def search_episode(
    scene: TaskScene, start: np.ndarray, model_xml: str, max_steps: int
) -> Episode | None:
    """The first grasp option that solves the task from `start` cleanly (render-free), else the
    first that solves it with a stall, else None."""
    goal = Goal.from_env(scene.env)
    obs = scene.restore(start)
    options = grasp_options(goal, scene.object_box(goal.obj))
    fallback: Episode | None = None
    for i, option in enumerate(options):
        # Exactly one restore before each attempt: a second one in a row changes the physics
        # that follows (the same layout then gives other step counts), and the recorded demos
        # of the earlier code would no longer be reproduced.
        rec = _attempt(scene, goal, option, obs if i == 0 else scene.restore(start), max_steps)
        if rec is None:
            continue
        stalled = tuple(rec.pop("stalled"))
        arr = {k: np.asarray(v, dtype=np.float64) for k, v in rec.items()}
        episode = Episode(
            model_xml,
            option,
            i + 1,
            arr["states"],
            arr["actions"],
            arr["joints"],
            arr["pos"],
            arr["quat"],
            arr["grip"],
            arr["final"][0],
            stalled,
        )
        if not stalled:
            return episode
        fallback = fallback or episode
    if fallback is not None:
        fallback.attempts = len(options)
    return fallback


def render_episode(camera_env: Any, episode: Episode) -> None:
    """Fill `episode.images` by re-rendering each recorded state in `camera_env`.

    Images keep the simulator's OpenGL row order, the order of the released files.
    """
    camera_env.reset_from_xml_string(episode.model_xml)
    frames: dict[str, list[np.ndarray]] = {name: [] for name in CAMERA_KEYS.values()}
    for state in episode.states:
        obs = camera_env.regenerate_obs_from_state(state)
        for key, name in CAMERA_KEYS.items():
            frames[name].append(np.array(obs[key], dtype=np.uint8))
    episode.images = {name: np.stack(f) for name, f in frames.items()}


def verify_in_camera_env(camera_env: Any, episode: Episode) -> bool:
    """The camera env, put into the episode's final state, agrees that the goal holds.

    (Stepping the last action again from the last recorded state is not a valid check: the
    solver's warm start differs, and success at the very step it first holds is marginal.)
    """
    camera_env.regenerate_obs_from_state(episode.final_state)
    return bool(camera_env.check_success())
