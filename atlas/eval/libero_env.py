"""One LIBERO task as an environment that speaks the policy's observation format.

`LiberoTaskEnv` wraps LIBERO's `OffScreenRenderEnv` for one (suite, task id): it renders both
cameras at a chosen resolution, loads the task's 50 initial states from the LIBERO package, and
converts every simulator observation with `to_policy_observation`:

    {"images": {"agentview_rgb": uint8 [h, w, 3], "eye_in_hand_rgb": uint8 [h, w, 3]},
     "instruction": str,
     "state": float32 [8]}   # eef pos (3) + eef axis-angle (3) + gripper finger qpos (2)

Images keep the simulator's OpenGL row order, which is the order stored in the HDF5 demos
(vertically flipped); the policy applies its own resize and orientation transform, as in training.
`LiberoEnvFactory` builds these envs and is picklable, so worker processes can each build their own.
"""

from __future__ import annotations

import difflib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from atlas.eval.libero_setup import import_libero

log = logging.getLogger(__name__)

# Policy steps allowed per episode (after the wait steps), as in OpenVLA / openpi / LeRobot.
SUITE_MAX_STEPS: dict[str, int] = {
    "libero_spatial": 220,
    "libero_object": 280,
    "libero_goal": 300,
    "libero_10": 520,
    "libero_90": 400,
}
# Simulator observation key -> policy camera name (the HDF5 `obs/` names).
CAMERA_KEYS: dict[str, str] = {
    "agentview_image": "agentview_rgb",
    "robot0_eye_in_hand_image": "eye_in_hand_rgb",
}
InstructionSource = Literal["filename", "problem_info"]


def check_suite(suite: str) -> str:
    """Return `suite` if it is a known LIBERO suite, else raise naming the closest one."""
    if suite not in SUITE_MAX_STEPS:
        close = difflib.get_close_matches(suite, list(SUITE_MAX_STEPS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(
            f"unknown LIBERO suite {suite!r}{hint} (known: {', '.join(SUITE_MAX_STEPS)})"
        )
    return suite


def instruction_from_task_name(name: str) -> str:
    """The file-name form of the instruction (docs/LIBERO.md §2).

    Drops every word up to and including the one containing `SCENE` (libero_10/90 names start
    with e.g. `KITCHEN_SCENE10_`) and turns `_` into spaces.
    """
    words = name.removesuffix("_demo.hdf5").removesuffix("_demo").split("_")
    scene = [i for i, w in enumerate(words) if "SCENE" in w]
    return " ".join(words[scene[-1] + 1 :] if scene else words)


def quat_to_axis_angle(quat_xyzw: np.ndarray) -> np.ndarray:
    """Unit quaternion [4] (x, y, z, w) -> axis-angle [3] (axis * angle, angle in [0, 2pi]).

    Same convention as robosuite's `quat2axisangle`, which produced `obs/ee_states` in the demos:
    no sign canonicalisation of w, so training and evaluation states agree.
    """
    q = np.asarray(quat_xyzw, dtype=np.float64)
    w = float(np.clip(q[3], -1.0, 1.0))
    den = np.sqrt(1.0 - w * w)
    if np.isclose(den, 0.0):
        return np.zeros(3)
    return q[:3] * 2.0 * np.arccos(w) / den


def to_policy_observation(raw: dict[str, Any], instruction: str) -> dict[str, Any]:
    """Simulator observation dict -> policy observation (see the module docstring for shapes)."""
    images = {name: np.ascontiguousarray(raw[key]) for key, name in CAMERA_KEYS.items()}
    state = np.concatenate(
        [
            raw["robot0_eef_pos"],
            quat_to_axis_angle(raw["robot0_eef_quat"]),
            raw["robot0_gripper_qpos"],
        ]
    ).astype(np.float32)
    return {"images": images, "instruction": instruction, "state": state}


class LiberoTaskEnv:
    """LIBERO's env for one task; `set_init_state` and `step` return policy observations.

    Attributes:
        suite, task_id, task_name: which task.
        instruction: the prompt given to the policy.
        init_states: float64 [N, D] simulator states, N = 50 for the released suites.
    """

    def __init__(
        self,
        suite: str,
        task_id: int,
        image_size: int = 128,
        instruction_source: InstructionSource = "filename",
        assets: str | Path | None = None,
    ) -> None:
        libero = import_libero(assets)
        from libero.libero import benchmark
        from libero.libero.envs import OffScreenRenderEnv

        bench = benchmark.get_benchmark_dict()[check_suite(suite)]()
        if not 0 <= task_id < bench.n_tasks:
            raise ValueError(f"{suite} has tasks 0..{bench.n_tasks - 1}, got task id {task_id}")
        task = bench.get_task(task_id)
        self.suite, self.task_id, self.task_name = suite, task_id, task.name
        # Task files come from the installed package itself, never from a user path.
        root = Path(libero.__file__).parent
        bddl_file = root / "bddl_files" / task.problem_folder / task.bddl_file
        self.init_states = load_init_states(
            root / "init_files" / task.problem_folder / task.init_states_file
        )
        self._env = OffScreenRenderEnv(
            bddl_file_name=str(bddl_file), camera_heights=image_size, camera_widths=image_size
        )
        self.instruction = self._pick_instruction(task, instruction_source)

    def _pick_instruction(self, task: Any, source: InstructionSource) -> str:
        if source == "problem_info":
            # The BDDL `(:language ...)` text, which the HDF5 `problem_info` holds too.
            return " ".join(self._env.language_instruction)
        text = instruction_from_task_name(task.name)
        if text != task.language:
            log.warning(
                "task %s: file-name instruction %r != LIBERO's %r", task.name, text, task.language
            )
        return text

    def seed(self, seed: int) -> None:
        self._env.seed(seed)

    def reset(self) -> None:
        self._env.reset()

    def set_init_state(self, state: np.ndarray) -> dict[str, Any]:
        return to_policy_observation(self._env.set_init_state(state), self.instruction)

    def step(self, action: np.ndarray) -> tuple[dict[str, Any], bool]:
        """Apply one action [7]; return (observation, done), done = the BDDL goal holds."""
        raw, _reward, done, _info = self._env.step(action)
        return to_policy_observation(raw, self.instruction), bool(done)

    def close(self) -> None:
        self._env.close()


def load_init_states(path: Path) -> np.ndarray:
    """The initial simulator states of one task: float64 [N, D].

    The files are numpy arrays that LIBERO pickled with torch.save. They are read with
    torch.load(weights_only=True) admitting numpy's array reconstruction and nothing else, so no
    file here can run code (LIBERO's own loader uses weights_only=False).
    """
    import torch

    reconstruct = (getattr(np, "_core", None) or np.core).multiarray._reconstruct
    allowed = [
        (reconstruct, "numpy.core.multiarray._reconstruct"),  # the name numpy 1.x pickles
        (reconstruct, "numpy._core.multiarray._reconstruct"),  # numpy 2.x
        np.ndarray,
        np.dtype,
        type(np.dtype(np.float64)),
    ]
    with torch.serialization.safe_globals(allowed):
        return np.asarray(torch.load(path, weights_only=True))


@dataclass(frozen=True)
class LiberoEnvFactory:
    """Builds `LiberoTaskEnv`s; a plain dataclass so spawn workers can receive it pickled."""

    image_size: int = 128
    instruction_source: InstructionSource = "filename"
    assets: str | None = None

    def num_tasks(self, suite: str) -> int:
        import_libero(self.assets)
        from libero.libero import benchmark

        return benchmark.get_benchmark_dict()[check_suite(suite)]().n_tasks

    def __call__(self, suite: str, task_id: int) -> LiberoTaskEnv:
        return LiberoTaskEnv(suite, task_id, self.image_size, self.instruction_source, self.assets)
