"""One unit of collection work: one layout seed of one task, from sampling to a written demo part.

A worker process keeps the two envs of the task it last worked on (creating them costs seconds),
so runs of seeds of the same task pay for them once. `collect_seed` is a plain function of
picklable arguments so a spawned process pool can run it.
"""

from __future__ import annotations

import atexit
import json
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from atlas.eval.libero_setup import SimulatorUnavailableError, import_libero
from atlas.sim.demo_file import write_demo_part
from atlas.sim.episode import render_episode, search_episode, verify_in_camera_env
from atlas.sim.scene import TaskInfo, TaskScene, make_env

_CACHE: dict[str, Any] = {}


def _envs(task: TaskInfo, image_size: int) -> tuple[TaskScene, Any]:
    key = (task.suite, task.task_id, image_size)
    if _CACHE.get("key") != key:
        import_libero()  # a spawned worker: assets, renderer and config come from the parent's env
        close_envs()
        _CACHE["scene"] = TaskScene(task)
        _CACHE["camera"] = make_env(task, cameras=True, image_size=image_size)
        _CACHE["key"] = key
        if not _CACHE.get("closes_at_exit"):
            # Registered after robosuite's own EGL handler, so it runs first (atexit is LIFO):
            # contexts freed after eglTerminate print tracebacks at every worker's exit.
            atexit.register(close_envs)
            _CACHE["closes_at_exit"] = True
    return _CACHE["scene"], _CACHE["camera"]


def close_envs() -> None:
    """Close this process's cached envs (their EGL contexts complain if left to the exit)."""
    for name in ("scene", "camera"):
        if name in _CACHE:
            _CACHE.pop(name).close()
    _CACHE.pop("key", None)  # "closes_at_exit" stays: the handler is registered once


def warm_up(task: TaskInfo, image_size: int) -> None:
    """Build the task's envs now, so a simulator that cannot start fails before any file exists.

    SimulatorUnavailableError names what failed (scene assets, renderer, MuJoCo model).
    """
    try:
        _envs(task, image_size)
    except SimulatorUnavailableError:
        raise
    except Exception as e:  # MuJoCo, robosuite and EGL raise many types; one line for all
        raise SimulatorUnavailableError(
            f"the LIBERO simulator could not start task {task.suite}/{task.task_id}: "
            f"{type(e).__name__}: {e}"
        ) from None


def record_path(workdir: Path, index: int) -> Path:
    return workdir / f"seed_{index:05d}.json"


def part_path(workdir: Path, index: int) -> Path:
    return workdir / f"seed_{index:05d}.h5part"


def collect_seed(
    task: TaskInfo, index: int, seed: int, workdir: Path, image_size: int, max_steps: int
) -> dict[str, Any]:
    """Sample the layout of `seed`, search the expert, render and write a kept demo.

    Returns the record also written (last, atomically) to `record_path(workdir, index)`:
    status "kept" (the demo part exists), "failed" (no grasp option succeeded) or "rejected"
    (the layout was invalid).
    """
    scene, camera = _envs(task, image_size)
    t0 = time.perf_counter()
    record: dict[str, Any] = {"index": index, "seed": seed, "status": "rejected"}
    layout = scene.sample_layout(seed)
    if layout is not None:
        state, xml, _ = layout
        episode = search_episode(scene, state, xml, max_steps)
        record["status"] = "failed"
        record["search_s"] = round(time.perf_counter() - t0, 2)
        if episode is not None:
            t1 = time.perf_counter()
            render_episode(camera, episode)
            # Checked after rendering: the camera env loads the layout's model while rendering.
            if verify_in_camera_env(camera, episode):
                write_demo_part(part_path(workdir, index), episode)
                record["status"] = "kept"
            record.update(
                steps=episode.num_steps,
                attempts=episode.attempts,
                stalled=list(episode.stalled),
                grasp=asdict(episode.option),
                render_s=round(time.perf_counter() - t1, 2),
            )
    record["wall_s"] = round(time.perf_counter() - t0, 2)
    tmp = record_path(workdir, index).with_suffix(".tmp")
    tmp.write_text(json.dumps(record))
    os.replace(tmp, record_path(workdir, index))
    return record
