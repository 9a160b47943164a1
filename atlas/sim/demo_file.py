"""Scripted episodes on disk, in exactly the layout of the released LIBERO HDF5 files.

    <task_name>_demo.hdf5
      data/                 attrs env_name, problem_info (JSON), macros_image_convention,
                            bddl_file_name, bddl_file_content, env_args (JSON), num_demos, total,
                            tag
        demo_N/             attrs num_samples, model_file (MJCF XML), init_state (float64 [D])
          actions [T, 7], states [T, D], robot_states [T, 9]   float64
          rewards [T], dones [T]                                 uint8 (1 only at the last step)
          obs/agentview_rgb, obs/eye_in_hand_rgb [T, 128, 128, 3] uint8 (OpenGL row order)
          obs/gripper_states [T, 2], joint_states [T, 7], ee_states [T, 6], ee_pos [T, 3],
              ee_ori [T, 3]                                      float64

Datasets are contiguous and unfiltered, as LIBERO writes them (the reader's fast path depends
on it). While a collection runs, each kept demo is its own small file (`write_demo_part`, the
same `demo` group alone); `assemble_task_file` copies them into the task file when all are in.
Both write a temporary file and rename it, so no reader ever sees a half-written one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np

from atlas.sim.episode import Episode
from atlas.sim.scene import TaskInfo

TAG = "libero-v1"
ENV_NAME = "Libero_Tabletop_Manipulation"
CAMERA_NAMES = ["robot0_eye_in_hand", "agentview"]


def task_file_name(task: TaskInfo) -> str:
    """The released file name: `<task_name>_demo.hdf5`."""
    return f"{task.name}_demo.hdf5"


def _replace_atomically(tmp: Path, path: Path) -> None:
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_demo_group(grp: h5py.Group, ep: Episode) -> None:
    """One `demo_N` group from a rendered episode (see the module docstring)."""
    steps = ep.num_steps
    last = np.zeros(steps, dtype=np.uint8)
    last[-1] = 1
    ee = ep.ee_states
    grp.attrs["num_samples"] = steps
    grp.attrs["model_file"] = ep.model_xml
    grp.attrs["init_state"] = ep.states[0]
    grp.create_dataset("actions", data=ep.actions)
    grp.create_dataset("states", data=ep.states)
    grp.create_dataset(
        "robot_states", data=np.concatenate([ep.gripper, ep.eef_pos, ep.eef_quat], 1)
    )
    grp.create_dataset("rewards", data=last)
    grp.create_dataset("dones", data=last.copy())
    obs = grp.create_group("obs")
    for camera, frames in ep.images.items():
        obs.create_dataset(camera, data=frames)
    obs.create_dataset("gripper_states", data=ep.gripper)
    obs.create_dataset("joint_states", data=ep.joints)
    obs.create_dataset("ee_states", data=ee)
    obs.create_dataset("ee_pos", data=ee[:, :3].copy())
    obs.create_dataset("ee_ori", data=ee[:, 3:].copy())


def write_demo_part(path: Path, ep: Episode) -> None:
    """A kept demo alone in its own file (group `demo`), written to a temporary name first."""
    tmp = path.with_name(path.name + ".tmp")
    with h5py.File(tmp, "w") as f:
        write_demo_group(f.create_group("demo"), ep)
    _replace_atomically(tmp, path)


def file_attrs(task: TaskInfo, image_size: int, controller: dict) -> dict[str, str]:
    """The `data` group's string attributes of a released file, for `task`."""
    from libero.libero.envs.bddl_utils import get_problem_info

    problem = get_problem_info(str(task.bddl_file))
    # The path as the released files spell it, relative to the LIBERO package's parent.
    bddl_name = str(Path(*task.bddl_file.parts[-5:]))
    env_kwargs = {
        "robots": ["Panda"],
        "controller_configs": controller,
        "bddl_file_name": bddl_name,
        "control_freq": 20,
        "camera_heights": image_size,
        "camera_widths": image_size,
        "camera_names": CAMERA_NAMES,
        "camera_depths": False,
        "camera_segmentations": None,
        "has_renderer": False,
        "has_offscreen_renderer": True,
        "ignore_done": True,
        "use_camera_obs": True,
        "reward_shaping": True,
    }
    env_args = {
        "type": 1,
        "env_name": ENV_NAME,
        "problem_name": problem["problem_name"],
        "bddl_file": bddl_name,
        "env_kwargs": env_kwargs,
    }
    return {
        "env_name": ENV_NAME,
        "problem_info": json.dumps(problem),
        "macros_image_convention": "opengl",
        "bddl_file_name": bddl_name,
        "bddl_file_content": task.bddl_file.read_text(encoding="utf-8"),
        "env_args": json.dumps(env_args),
    }


def assemble_task_file(
    path: Path, parts: Sequence[Path], task: TaskInfo, image_size: int, controller: dict
) -> int:
    """Copy the demo parts, in order, into the task file `path`; returns the total steps."""
    tmp = path.with_name(f".{path.name}.tmp")
    total = 0
    with h5py.File(tmp, "w") as f:
        data = f.create_group("data")
        for i, part in enumerate(parts):
            with h5py.File(part, "r") as src:
                src.copy(src["demo"], data, name=f"demo_{i}")
                total += int(src["demo"].attrs["num_samples"])
        for key, value in file_attrs(task, image_size, controller).items():
            data.attrs[key] = value
        data.attrs["num_demos"] = len(parts)
        data.attrs["total"] = total
        data.attrs["tag"] = TAG
    _replace_atomically(tmp, path)
    return total


def read_file_identity(path: Path) -> dict[str, str | int]:
    """What a collection needs to know of an existing task file: suite, cameras, demos.

    Raises OSError / KeyError / ValueError when the file is not a LIBERO demo file.
    """
    with h5py.File(path, "r") as f:
        data = f["data"]
        env_args = json.loads(data.attrs["env_args"])
        kwargs = env_args["env_kwargs"]
        return {
            "bddl_file": str(env_args.get("bddl_file", data.attrs.get("bddl_file_name", ""))),
            "image_size": int(kwargs["camera_heights"]),
            "num_demos": int(data.attrs["num_demos"]),
        }
