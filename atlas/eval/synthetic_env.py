"""The synthetic tabletop world as a closed-loop environment: `atlas rollout --suite synthetic`.

`SyntheticTaskEnv` is one task of the dataset `atlas.data.synthetic` writes, behind the same
`TaskEnv` interface as a LIBERO task (`atlas.eval.rollout`), so a trained policy runs through
exactly the LIBERO rollout code (wait steps, predict_action, replan interval, clipping, step
limit, results file, table, videos). What it shares with the recorder makes it faithful:

    layout    the task's base layout from the dataset's seed, jittered by the same function
    physics   `synthetic_scene.apply_action` (the recorder steps the expert through it too)
    images    the same renderer at the stored resolution, in the stored (OpenGL, upside-down)
              row order, both cameras; the policy flips them as in training
    state     float32 [8] = ee_states (eef pos + axis-angle) + gripper_states, as obs/ stores
    done      `synthetic_scene.task_done`: the named block rests on the receptacle

Held-out layouts: trial i of a run with --seed S uses the jitter stream
(data seed, task, HELD_OUT_STREAM, S, i); the dataset's demos use (data seed, task, demo), so no
rollout layout is a training or validation episode. `init_states` encodes those layouts as
vectors (`encode_scene`), like LIBERO's init-state files.

Observations also carry "privileged": {"scene", "state"} (the world's exact state, as LIBERO's
observations carry object poses); only `ExpertPolicy` reads it.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np

from atlas.data import synthetic_scene as world
from atlas.data.synthetic import (
    DATA_SEED,
    DOWN_AXIS_ANGLE,
    FINGER_OPEN,
    synthetic_tasks,
)

SYNTHETIC_SUITE = "synthetic"
SYNTHETIC_MAX_STEPS = 50  # policy steps per episode; the expert needs 15 to 23
HELD_OUT_STREAM = 2**31 - 1  # a jitter-stream entry no dataset demo index reaches
NUM_LAYOUTS = 50  # held-out layouts per task, as many as LIBERO's init states
CAMERAS = ("agentview_rgb", "eye_in_hand_rgb")


def encode_scene(scene: world.Scene) -> np.ndarray:
    """A jittered layout as float64 [2 * blocks + 8]: blocks xy, receptacle xy, arm xyz, tint."""
    parts = [xy for _, xy in scene.blocks] + [scene.place_xy, scene.arm_start, scene.tint]
    return np.concatenate(parts).astype(np.float64)


def decode_scene(base: world.Scene, vector: np.ndarray) -> world.Scene:
    """The inverse of `encode_scene`, with colours, target and receptacle kind from `base`."""
    n = len(base.blocks)
    v = np.asarray(vector, dtype=np.float64)
    if v.shape != (2 * n + 8,):
        raise ValueError(f"a synthetic init state has {2 * n + 8} values, got shape {v.shape}")
    blocks = [(colour, v[2 * i : 2 * i + 2].copy()) for i, (colour, _) in enumerate(base.blocks)]
    return replace(
        base,
        blocks=blocks,
        place_xy=v[2 * n : 2 * n + 2],
        arm_start=v[2 * n + 2 : 2 * n + 5],
        tint=v[2 * n + 5 :].round().astype(np.int64),
    )


def task_layout(task_id: int) -> tuple[dict[str, str], world.Scene]:
    """(task, base layout) of synthetic task `task_id`, as the dataset generator makes them."""
    task = synthetic_tasks(task_id + 1)[task_id]
    rng = np.random.default_rng([DATA_SEED, task_id])
    return task, world.sample_layout(rng, task["colour"], task["place"])


def held_out_layouts(task_id: int, seed: int, count: int = NUM_LAYOUTS) -> np.ndarray:
    """float64 [count, D]: layouts of task `task_id` that no dataset episode uses (module doc)."""
    _, base = task_layout(task_id)
    rngs = (
        np.random.default_rng([DATA_SEED, task_id, HELD_OUT_STREAM, seed, i]) for i in range(count)
    )
    return np.stack([encode_scene(world.jitter_scene(base, rng)) for rng in rngs])


def check_task_id(task_id: int, num_tasks: int) -> None:
    if not 0 <= task_id < num_tasks:
        raise ValueError(
            f"--tasks: the synthetic suite of this policy has tasks 0..{num_tasks - 1}, got "
            f"{task_id}"
        )


class SyntheticTaskEnv:
    """One synthetic task in policy observation format (see the module docstring)."""

    def __init__(
        self,
        task_id: int,
        image_size: int = 64,
        instruction_source: Literal["filename", "problem_info"] = "filename",
        seed: int = 7,
        num_tasks: int = len(world.COLOURS) * len(world.PLACES),
    ) -> None:
        check_task_id(task_id, num_tasks)
        task, self.base = task_layout(task_id)
        self.task_id, self.task_name = task_id, task["name"]
        key = "instruction" if instruction_source == "filename" else "problem_info"
        self.instruction = task[key]
        self.image_size = image_size
        self.init_states = held_out_layouts(task_id, seed)
        self.scene, self.state = self.base, world.initial_state(self.base)
        self._static = world.render_static(self.base, image_size)
        self.env_seed: int | None = None

    def seed(self, seed: int) -> None:
        """Recorded only: the world is deterministic (no physics noise to seed)."""
        self.env_seed = seed

    def reset(self) -> None:
        self.set_init_state(encode_scene(self.base))

    def set_init_state(self, state: np.ndarray) -> dict[str, Any]:
        """Lay out the scene encoded by `state` (a row of init_states); its first observation."""
        self.scene = decode_scene(self.base, state)
        self.state = world.initial_state(self.scene)
        self._static = world.render_static(self.scene, self.image_size)
        return self.observation()

    def step(self, action: np.ndarray) -> tuple[dict[str, Any], bool]:
        """Apply one action [7] (the recorder's meaning); (observation, the block is placed)."""
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (7,):
            raise ValueError(f"a synthetic env action has 7 values, got shape {action.shape}")
        self.state = world.apply_action(self.state, action)
        return self.observation(), world.task_done(self.scene, self.state)

    def observation(self) -> dict[str, Any]:
        s = self.state
        frame = world.render_agentview(self._static, self.scene, s.pos, s.grip, s.block)
        wrist = world.render_wrist(frame, s.pos)
        fingers = FINGER_OPEN * (1.0 - s.grip)
        state = np.concatenate([s.pos, DOWN_AXIS_ANGLE, [fingers, -fingers]]).astype(np.float32)
        return {
            # Stored row order (OpenGL, upside down), as the dataset and LIBERO's simulator.
            "images": {CAMERAS[0]: frame[::-1].copy(), CAMERAS[1]: wrist[::-1].copy()},
            "instruction": self.instruction,
            "state": state,
            "privileged": {"scene": self.scene, "state": s},
        }

    def close(self) -> None:
        """Nothing to release (no simulator process, no GL context)."""


@dataclass(frozen=True)
class SyntheticEnvFactory:
    """Builds `SyntheticTaskEnv`s for the dataset a policy was trained on (picklable).

    num_tasks / image_size: the dataset's `data.synthetic.tasks` / `image_size`; seed: --seed,
    which picks the held-out layouts.
    """

    num_tasks_: int = 4
    image_size: int = 64
    instruction_source: Literal["filename", "problem_info"] = "filename"
    seed: int = 7
    cameras: tuple[str, ...] = CAMERAS

    def num_tasks(self, suite: str) -> int:
        check_synthetic_suite(suite)
        return self.num_tasks_

    def __call__(self, suite: str, task_id: int) -> SyntheticTaskEnv:
        check_synthetic_suite(suite)
        return SyntheticTaskEnv(
            task_id, self.image_size, self.instruction_source, self.seed, self.num_tasks_
        )


def check_synthetic_suite(suite: str) -> None:
    if suite != SYNTHETIC_SUITE:
        close = difflib.get_close_matches(suite, [SYNTHETIC_SUITE], n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"the synthetic env runs suite {SYNTHETIC_SUITE!r}, got {suite!r}{hint}")


class ExpertPolicy:
    """The dataset's scripted expert acting in closed loop (noise-free), one action per call.

    Reads the observation's "privileged" world state, so it only runs in `SyntheticTaskEnv`.
    """

    def __init__(self) -> None:
        self._expert: world.ScriptedExpert | None = None

    def reset(self) -> None:
        self._expert = None

    def predict_action(self, observation: dict[str, Any]) -> np.ndarray:
        privileged = observation.get("privileged")
        if privileged is None:
            raise ValueError("the expert policy needs the synthetic env (--suite synthetic)")
        if self._expert is None:
            self._expert = world.ScriptedExpert(privileged["scene"])
        return self._expert.act(privileged["state"])[None].astype(np.float32)
