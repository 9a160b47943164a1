"""A small, learnable dataset in EXACTLY the original LIBERO HDF5 layout (docs/LIBERO.md §1).

Task i is "pick up the <colour> block and place it on the <receptacle>" (six colours x three
receptacles, so at most 18 tasks); see `atlas.data.synthetic_scene` for the world and the expert.
The actions are a simple function of the agentview image, the instruction (which block) and the
proprio (where the arm is), with magnitudes far above the noise, so a tiny model learns them in
minutes on a CPU. Images are stored upside down (OpenGL rows) like the real files, the file-name
instruction differs from problem_info's wording like most real tasks do, and the demos end with a
few exact no-op steps, so every reader quirk is exercised.

`generate_synthetic` writes into a temporary sibling folder and renames it into place, so a reader
never sees a half-written dataset and concurrent ranks cannot clobber each other.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import h5py
import numpy as np

from atlas.data import synthetic_scene as world

log = logging.getLogger(__name__)

STATE_DIM = 34  # time, arm xyz, fingers (2), 4 objects x (xyz + quat xyzw)
DATA_SEED = 0  # the seed of the dataset the trainer generates (layouts, demos)
DOWN_AXIS_ANGLE = np.array([np.pi, 0.0, 0.0])  # gripper pointing down
_DOWN_QUAT_XYZW = np.array([1.0, 0.0, 0.0, 0.0])
FINGER_OPEN = 0.04  # metres per finger


def synthetic_tasks(n: int) -> list[dict[str, str]]:
    """The first n tasks: file stem, the two instruction wordings, colour and receptacle."""
    colours = list(world.COLOURS)
    limit = len(colours) * len(world.PLACES)
    if not 1 <= n <= limit:
        raise ValueError(f"the synthetic dataset has 1 to {limit} tasks, got {n}")
    tasks = []
    for i in range(n):
        colour, place = colours[i % len(colours)], world.PLACES[i // len(colours)]
        name = f"pick_up_the_{colour}_block_and_place_it_on_the_{place}"
        # problem_info words it differently, as it does for most real LIBERO tasks.
        info = f"pick the {colour} block and put it on the {place}"
        tasks.append(
            {
                "name": name,
                "instruction": name.replace("_", " "),
                "problem_info": info,
                "colour": colour,
                "place": place,
            }
        )
    return tasks


def generate_synthetic(
    out_dir: str | Path,
    tasks: int = 4,
    demos: int = 10,
    steps: int = 40,
    image_size: int = 128,
    seed: int = DATA_SEED,
) -> Path:
    """Write `tasks` files `<task_name>_demo.hdf5` with `demos` demos into out_dir.

    A demo lasts until the scripted expert is done (plus two still steps) or `steps` steps,
    whichever is shorter. The folder appears atomically (temporary sibling, then rename); raises
    FileExistsError when out_dir already holds files. Layouts are seeded by (seed, task) and demos
    by (seed, task, demo), so the data does not depend on how many tasks or demos are asked for.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir}: already exists and is not empty")
    if steps < 2 or demos < 1 or image_size < 16:
        raise ValueError("need steps >= 2, demos >= 1 and image_size >= 16")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the dataset is not
    try:
        for task_id, task in enumerate(synthetic_tasks(tasks)):
            path = tmp / f"{task['name']}_demo.hdf5"
            _write_task_file(path, task, task_id, demos, steps, image_size, seed)
        if out_dir.exists():
            out_dir.rmdir()  # empty (checked above); rename cannot replace a directory here
        os.rename(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info(
        "wrote %d synthetic LIBERO files (%d demos of up to %d steps) to %s",
        tasks,
        demos,
        steps,
        out_dir,
    )
    return out_dir


def synthetic_size(path: str | Path) -> tuple[int, int, int]:
    """(tasks, demos per task, image side) of a synthetic dataset folder, read from its files."""
    files = sorted(Path(path).glob("*_demo.hdf5"))
    if not files:
        return 0, 0, 0
    with h5py.File(files[0], "r") as f:
        data = f["data"]
        demos = int(data.attrs["num_demos"])
        side = int(data["demo_0/obs/agentview_rgb"].shape[1])
    return len(files), demos, side


def _write_task_file(
    path: Path, task: dict[str, str], task_id: int, demos: int, steps: int, size: int, seed: int
) -> None:
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        total = 0
        layout = world.sample_layout(
            np.random.default_rng([seed, task_id]), task["colour"], task["place"]
        )
        for d in range(demos):
            rng = np.random.default_rng([seed, task_id, d])
            scene = world.jitter_scene(layout, rng)
            total += _write_demo(data.create_group(f"demo_{d}"), scene, steps, size, rng)
        _write_file_attrs(data, task, total, demos, size)


def _write_file_attrs(data: h5py.Group, task: dict[str, str], total: int, demos: int, size: int):
    bddl = f"atlas_synthetic/{task['name']}.bddl"
    problem = {
        "problem_name": "libero_tabletop_manipulation",
        "domain_name": "robosuite",
        "language_instruction": task["problem_info"],
    }
    env_kwargs = {
        "robots": ["Panda"],
        "controller_configs": {"type": "OSC_POSE", "control_delta": True},
        "bddl_file_name": bddl,
        "control_freq": 20,
        "camera_heights": size,
        "camera_widths": size,
        "camera_names": ["robot0_eye_in_hand", "agentview"],
        "camera_depths": False,
        "has_renderer": False,
        "has_offscreen_renderer": True,
        "ignore_done": True,
        "use_camera_obs": True,
        "reward_shaping": False,
    }
    env_args = {
        "type": 1,
        "env_name": "Libero_Tabletop_Manipulation",
        "bddl_file": bddl,
        "problem_name": problem["problem_name"],
        "env_kwargs": env_kwargs,
    }
    data.attrs["env_name"] = "Libero_Tabletop_Manipulation"
    data.attrs["problem_info"] = json.dumps(problem)
    data.attrs["macros_image_convention"] = "opengl"
    data.attrs["bddl_file_name"] = bddl
    data.attrs["bddl_file_content"] = (
        f"(define (problem atlas_synthetic)\n  (:language {task['instruction']})\n"
        f"  (:goal (On {task['colour']}_block_1 {task['place']}_1)))\n"
    )
    data.attrs["env_args"] = json.dumps(env_args)
    data.attrs["num_demos"] = demos
    data.attrs["total"] = total
    data.attrs["tag"] = "libero-v1"


def _write_demo(
    grp: h5py.Group, scene: world.Scene, max_steps: int, size: int, rng: np.random.Generator
) -> int:
    """One demo group: attributes, per-step arrays and the two cameras (stored upside down).

    Returns its number of steps.
    """
    roll = world.run_expert(scene, max_steps, rng)
    pos, grip, block = roll["pos"], roll["grip"], roll["block"]
    steps = len(pos)
    static = world.render_static(scene, size)
    agent = np.empty((steps, size, size, 3), dtype=np.uint8)
    wrist = np.empty_like(agent)
    for t in range(steps):
        frame = world.render_agentview(static, scene, pos[t], grip[t], block[t])
        agent[t], wrist[t] = frame, world.render_wrist(frame, pos[t])
    fingers = np.stack([FINGER_OPEN * (1 - grip), -FINGER_OPEN * (1 - grip)], axis=1)
    ee_states = np.concatenate([pos, np.tile(DOWN_AXIS_ANGLE, (steps, 1))], axis=1)
    quat = np.tile(_DOWN_QUAT_XYZW, (steps, 1))
    states = _sim_states(scene, pos, fingers, block)
    done = np.zeros(steps, dtype=np.uint8)
    done[-1] = 1
    grp.attrs["num_samples"] = steps
    grp.attrs["model_file"] = "<mujoco model='atlas_synthetic'><worldbody/></mujoco>"
    grp.attrs["init_state"] = states[0]
    grp.create_dataset("actions", data=roll["actions"].astype(np.float64))
    grp.create_dataset("states", data=states)
    grp.create_dataset("robot_states", data=np.concatenate([fingers, pos, quat], axis=1))
    grp.create_dataset("rewards", data=done.copy())
    grp.create_dataset("dones", data=done)
    obs = grp.create_group("obs")
    obs.create_dataset("agentview_rgb", data=agent[:, ::-1])  # OpenGL row order, as LIBERO
    obs.create_dataset("eye_in_hand_rgb", data=wrist[:, ::-1])
    obs.create_dataset("gripper_states", data=fingers)
    obs.create_dataset("joint_states", data=_joint_angles(pos))
    obs.create_dataset("ee_states", data=ee_states)
    obs.create_dataset("ee_pos", data=ee_states[:, :3].copy())
    obs.create_dataset("ee_ori", data=ee_states[:, 3:].copy())
    return steps


def _sim_states(
    scene: world.Scene, pos: np.ndarray, fingers: np.ndarray, block: np.ndarray
) -> np.ndarray:
    """A flattened "MuJoCo state" [T, STATE_DIM]: time, arm, fingers, every object's pose."""
    steps = len(pos)
    cols = [np.arange(steps)[:, None] / 20.0, pos, fingers]
    identity = np.tile([0.0, 0.0, 0.0, 1.0], (steps, 1))
    for i, (_, xy) in enumerate(scene.blocks):
        xyz = block if i == scene.target else np.tile([*xy, 0.0], (steps, 1))
        cols += [xyz, identity]
    cols += [np.tile([*scene.place_xy, 0.0], (steps, 1)), identity]
    return np.concatenate(cols, axis=1).astype(np.float64)


def _joint_angles(pos: np.ndarray) -> np.ndarray:
    """A smooth stand-in for the 7 joint angles [T, 7] (fixed linear map of the eef position)."""
    mix = np.random.default_rng(1234).normal(0.0, 1.0, size=(3, 7))
    return (pos @ mix + np.linspace(-1.0, 1.0, 7)).astype(np.float64)
