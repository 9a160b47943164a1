"""LIBERO task scenes for scripted collection: a fast physics env and a camera env for one task.

`TaskScene` holds LIBERO's `ControlEnv` for one (suite, task id) built render-free
(`use_camera_obs=False, has_offscreen_renderer=False`, about 10x faster per step), which is where
the expert searches its grasp options, and on request a second env with both 128 px cameras that
only re-renders recorded simulator states (`set_state` replay is deterministic; replaying the
actions open loop is not).

Initial layouts come from the env's own placement sampler: `np.random` is seeded, then the env
is reset, exactly as LIBERO's own collection did. Layouts whose objects were placed overlapping
(the sampler does not check every pair) are ejected by the physics in the first steps; those are
rejected, since the task's description would no longer hold: an object on the table may move at
most `MAX_DRIFT` while settling (an object placed on another one moves with its support and is
not checked itself).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from atlas.eval.libero_env import check_suite, load_init_states
from atlas.eval.libero_setup import import_libero
from atlas.sim.expert import ObjectBox

log = logging.getLogger(__name__)

WAIT_ACTION = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0])
SETTLE_STEPS = 10  # objects start a few cm above the table and settle within about 3 steps
MAX_DRIFT = 0.02  # metres an object may move while settling before the layout is rejected


@dataclass(frozen=True)
class TaskInfo:
    """One LIBERO task: names and the files that ship inside the installed package."""

    suite: str
    task_id: int
    name: str
    language: str
    bddl_file: Path
    init_states_file: Path


def suite_tasks(suite: str, assets: str | Path | None = None) -> list[TaskInfo]:
    """Every task of `suite` (ValueError naming the closest suite when unknown)."""
    libero = import_libero(assets)
    from libero.libero import benchmark

    bench = benchmark.get_benchmark_dict()[check_suite(suite)]()
    root = Path(libero.__file__).parent
    tasks = []
    for i in range(bench.n_tasks):
        t = bench.get_task(i)
        tasks.append(
            TaskInfo(
                suite,
                i,
                t.name,
                t.language,
                root / "bddl_files" / t.problem_folder / t.bddl_file,
                root / "init_files" / t.problem_folder / t.init_states_file,
            )
        )
    return tasks


def make_env(task: TaskInfo, cameras: bool, image_size: int = 128) -> Any:
    """LIBERO's `ControlEnv` for `task`; with `cameras` the two 128 px cameras of the demos."""
    from libero.libero.envs.env_wrapper import ControlEnv

    kwargs: dict[str, Any] = {"camera_heights": image_size, "camera_widths": image_size}
    if not cameras:
        kwargs = {"use_camera_obs": False, "has_offscreen_renderer": False}
    # robosuite's default joint noise (gaussian, 0.02 rad) varies the arm's start like the
    # official initial states do.
    return ControlEnv(bddl_file_name=str(task.bddl_file), initialization_noise="default", **kwargs)


class TaskScene:
    """The render-free env of one task plus the layout and settle logic.

    Attributes:
        task: which task.
        env: the render-free `ControlEnv`.
        official: float64 [50, D] the official evaluation init states, never reused as layouts.
    """

    def __init__(self, task: TaskInfo) -> None:
        self.task = task
        self.env = make_env(task, cameras=False)
        self.official = load_init_states(task.init_states_file)
        self._objects = list(self.env.env.objects_dict)

    def sample_layout(self, seed: int) -> tuple[np.ndarray, str, dict[str, Any]] | None:
        """Reset to the sampler's layout for `seed`, settle, return (state, model xml, obs).

        None when the layout is rejected (objects ejected while settling, or equal to an
        official init state).
        """
        self.env.seed(seed)
        self.env.reset()
        start = self._object_positions()
        if self._is_official(self.env.get_sim_state()):
            return None
        for _ in range(SETTLE_STEPS):
            obs, _, _, _ = self.env.step(WAIT_ACTION)
        end = self._object_positions()
        # An object placed on another one settles against its support with an offset (the bowl
        # on the ramekin slides 3.7 cm, in the official init states as well, where LIBERO's own
        # On predicate then no longer holds either): only its support's drift is checked.
        stacked = [p for p in self.env.env.parsed_problem["initial_state"] if self._on_object(p)]
        resting = {p[1] for p in stacked}
        drift = max(
            np.linalg.norm((end[o] - start[o])[:2]) for o in self._objects if o not in resting
        )
        if drift > MAX_DRIFT:
            log.debug(
                "seed %d: an object moved %.3f m while settling; layout rejected", seed, drift
            )
            return None
        return self.env.get_sim_state().copy(), self.env.sim.model.get_xml(), obs

    def _on_object(self, predicate: list[str]) -> bool:
        """`(On a b)` with both a and b movable objects (not a table region or fixture)."""
        return (
            len(predicate) == 3
            and predicate[0].lower() == "on"
            and predicate[1] in self._objects
            and predicate[2] in self._objects
        )

    def _object_positions(self) -> dict[str, np.ndarray]:
        """World position of every movable object, from the current qpos.

        Not from reset()'s observation: objects placed on other objects (a bowl on the ramekin)
        get their pose after the last forward pass, so the observation still shows a default.
        """
        inner = self.env.env
        inner.sim.forward()
        return {o: inner.sim.data.body_xpos[inner.obj_body_id[o]].copy() for o in self._objects}

    def _is_official(self, state: np.ndarray) -> bool:
        # Time (index 0) differs between any two states; compare the positions that follow it.
        n = min(len(state), self.official.shape[1])
        return bool(np.any(np.all(np.abs(self.official[:, 1:n] - state[1:n]) < 1e-6, axis=1)))

    def restore(self, state: np.ndarray) -> dict[str, Any]:
        """Put the simulator back into `state` and return its observation.

        Also a new episode for robosuite's step counter: it refuses to step once `horizon`
        (1000) steps have run, and the grasp attempts of one layout together can take more
        (4 x 280 on libero_object).
        """
        self.env.env.timestep = 0
        self.env.env.done = False
        return self.env.regenerate_obs_from_state(state)

    def object_box(self, name: str) -> ObjectBox:
        """The collision geoms of object `name` (all its bodies) as a box around its origin.

        From the current pose: each geom's own bounding box (MuJoCo's `geom_aabb`, centre and
        half sizes in the geom's frame) turned into world axes.
        """
        sim = self.env.env.sim
        model, data = sim.model, sim.data
        bodies = {
            b
            for b in range(model.nbody)
            if (n := model.body_id2name(b) or "") == name or n.startswith(name + "_")
        }
        origin = data.body_xpos[self.env.env.obj_body_id[name]]
        lo, hi = np.full(3, np.inf), np.full(3, -np.inf)
        for g in range(model.ngeom):
            if model.geom_bodyid[g] not in bodies or not model.geom_contype[g]:
                continue
            rot = data.geom_xmat[g].reshape(3, 3)
            centre = data.geom_xpos[g] + rot @ model.geom_aabb[g, :3]
            half = np.abs(rot) @ model.geom_aabb[g, 3:]
            lo, hi = np.minimum(lo, centre - half), np.maximum(hi, centre + half)
        if not np.isfinite(lo).all():
            raise ValueError(f"object {name!r} has no collision geoms in {self.task.name}")
        return ObjectBox(lo - origin, hi - origin)

    def close(self) -> None:
        self.env.close()
