"""A fake LIBERO task env and scripted policies for the rollout tests (no simulator).

Module-level classes, so spawned worker processes can unpickle them (spawn passes sys.path on).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

WAIT_STEPS = 10


class FakeTaskEnv:
    """Records every call; `done` turns true `done_step` policy steps after the wait steps for the
    trials listed in `successes` (the trial is read back from the initial state it was given)."""

    def __init__(
        self, task_id: int, successes: set[int], done_step: int, image_size: int, n_init: int
    ) -> None:
        self.task_id = task_id
        self.task_name = f"fake_task_{task_id}"
        self.instruction = f"do fake task {task_id}"
        self.init_states = np.repeat(np.arange(n_init, dtype=np.float64)[:, None], 4, axis=1)
        self.successes, self.done_step, self.image_size = successes, done_step, image_size
        self.calls: list[tuple[Any, ...]] = []
        self.actions: list[np.ndarray] = []
        self.t = 0
        self.trial = -1

    def _obs(self) -> dict[str, Any]:
        s = self.image_size
        img = np.full((s, s, 3), self.t % 256, dtype=np.uint8)
        return {
            "images": {"agentview_rgb": img, "eye_in_hand_rgb": img.copy()},
            "instruction": self.instruction,
            "state": np.full(8, self.t, dtype=np.float32),  # state[0] = env steps since reset
        }

    def seed(self, seed: int) -> None:
        self.calls.append(("seed", seed))

    def reset(self) -> None:
        self.calls.append(("reset",))
        self.t = 0

    def set_init_state(self, state: np.ndarray) -> dict[str, Any]:
        self.trial = int(state[0])
        self.calls.append(("set_init_state", self.trial))
        return self._obs()

    def step(self, action: np.ndarray) -> tuple[dict[str, Any], bool]:
        self.t += 1
        self.actions.append(np.array(action, dtype=np.float64))
        self.calls.append(("step",))
        done = self.trial in self.successes and self.t >= WAIT_STEPS + self.done_step
        return self._obs(), done

    def close(self) -> None:
        self.calls.append(("close",))


@dataclass
class FakeEnvFactory:
    """Builds `FakeTaskEnv`s. `successes`: task id -> trials that succeed; `envs`: what was built
    (only seen for inline runs)."""

    n_tasks: int = 3
    successes: dict[int, set[int]] = field(default_factory=dict)
    done_step: int = 5
    image_size: int = 8
    n_init: int = 50
    envs: list[FakeTaskEnv] = field(default_factory=list)

    def num_tasks(self, suite: str) -> int:
        return self.n_tasks

    def __call__(self, suite: str, task_id: int) -> FakeTaskEnv:
        env = FakeTaskEnv(
            task_id,
            self.successes.get(task_id, set()),
            self.done_step,
            self.image_size,
            self.n_init,
        )
        self.envs.append(env)
        return env

    def episodes_run(self) -> int:
        return sum(c == ("reset",) for env in self.envs for c in env.calls)


class ScriptedPolicy:
    """Returns chunks [chunk_size, 7] whose row j of call c is [c/100, j/100, 0, 0, 0, 0, value].

    Records the env step count (state[0]) seen at every call and the number of resets.
    """

    def __init__(self, chunk_size: int = 8, value: float = 0.5) -> None:
        self.chunk_size, self.value = chunk_size, value
        self.seen_steps: list[int] = []
        self.resets = 0

    def reset(self) -> None:
        self.resets += 1

    def predict_action(self, observation: dict[str, Any]) -> np.ndarray:
        c = len(self.seen_steps)
        self.seen_steps.append(int(observation["state"][0]))
        chunk = np.zeros((self.chunk_size, 7))
        chunk[:, 0] = c / 100
        chunk[:, 1] = np.arange(self.chunk_size) / 100
        chunk[:, 6] = self.value
        return chunk


@dataclass(frozen=True)
class ScriptedPolicyFactory:
    chunk_size: int = 8

    def __call__(self) -> ScriptedPolicy:
        return ScriptedPolicy(self.chunk_size)
