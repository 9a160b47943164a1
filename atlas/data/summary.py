"""What is in a set of LIBERO HDF5 files or LeRobotDataset folders (`atlas data inspect`), from
metadata and actions only."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from atlas.data.errors import DataError
from atlas.data.lerobot_meta import is_lerobot_root, load_meta
from atlas.data.libero_hdf5 import (
    demo_keys,
    instruction_from_filename,
    instruction_from_problem_info,
    resolve_paths,
)


def summarize(paths: str | Path | Sequence[str | Path]) -> dict[str, Any]:
    """Per file: suite, both instruction wordings, demos, steps, image shapes, action ranges.

    Returns {"files": [...], "num_files", "num_demos", "num_steps"}; raises DataError on a file
    that cannot be read as a LIBERO demo file. LeRobotDataset folders are summarized task by task
    (one entry per task of each folder), after the same checks training runs.
    """
    items = [paths] if isinstance(paths, (str, Path)) else list(paths)
    if items and all(is_lerobot_root(p) for p in items):
        files = summarize_lerobot(items)
    else:
        files = [_summarize_file(p) for p in resolve_paths(paths)]
    return {
        "files": files,
        "num_files": len(files),
        "num_demos": sum(f["demos"] for f in files),
        "num_steps": sum(f["steps"] for f in files),
    }


def summarize_lerobot(roots: Sequence[str | Path]) -> list[dict[str, Any]]:
    """One `_summarize_file`-shaped entry per (LeRobotDataset folder, task)."""
    from atlas.data.lerobot import build_lerobot_index

    entries = []
    for root in roots:
        meta = load_meta(root)
        index = build_lerobot_index(root, meta.camera_keys)
        for task_id, task in enumerate(index.tasks):
            episodes = [ep for ep in index.episodes if ep.task == task_id]
            lengths = [len(ep.steps) for ep in episodes]
            actions = np.concatenate([ep.actions for ep in episodes])
            shapes = episodes[0].frame_shapes
            entries.append(
                {
                    "path": str(root),
                    "suite": Path(root).name,
                    "format": f"LeRobotDataset {meta.version}, {meta.fps:g} fps",
                    "instruction": task,
                    "problem_info_instruction": None,
                    "demos": len(episodes),
                    "steps": int(sum(lengths)),
                    "min_steps": int(min(lengths)),
                    "max_steps": int(max(lengths)),
                    "images": {k: list(shapes[k]) for k in meta.camera_keys},
                    "action_min": [round(float(v), 4) for v in actions.min(axis=0)],
                    "action_max": [round(float(v), 4) for v in actions.max(axis=0)],
                }
            )
    return entries


def _summarize_file(path: Path) -> dict[str, Any]:
    if not h5py.is_hdf5(path):
        raise DataError(str(path), "not an HDF5 file")
    with h5py.File(path, "r") as f:
        demos = demo_keys(f, path)
        lengths, lows, highs = [], [], []
        for demo in demos:
            actions = f["data"][demo].get("actions")
            if not isinstance(actions, h5py.Dataset) or actions.ndim != 2 or not len(actions):
                raise DataError(str(path), "missing or empty", demo=f"data/{demo}", key="actions")
            values = actions[()]
            lengths.append(len(values))
            lows.append(values.min(axis=0))
            highs.append(values.max(axis=0))
        obs = f["data"][demos[0]].get("obs")
        images = {}
        if isinstance(obs, h5py.Group):
            images = {k: list(v.shape[1:]) for k, v in obs.items() if getattr(v, "ndim", 0) == 4}
        try:
            info = instruction_from_problem_info(f, path)
        except DataError:
            info = None
        return {
            "path": str(path),
            "suite": path.parent.name,
            "instruction": instruction_from_filename(path),
            "problem_info_instruction": info,
            "demos": len(demos),
            "steps": int(sum(lengths)),
            "min_steps": int(min(lengths)),
            "max_steps": int(max(lengths)),
            "images": images,
            "action_min": [round(float(v), 4) for v in np.min(lows, axis=0)],
            "action_max": [round(float(v), 4) for v in np.max(highs, axis=0)],
        }


def format_summary(summary: dict[str, Any]) -> str:
    """A human-readable report of `summarize`'s result."""
    lines = [
        f"{summary['num_files']} files, {summary['num_demos']} demos, {summary['num_steps']} steps"
    ]
    for f in summary["files"]:
        lines.append(f"\n{f['path']}")
        lines.append(f"  {'task':<16} {f['instruction']}")
        if "format" in f:
            lines.append(f"  {'format':<16} {f['format']}")
        if f["problem_info_instruction"] not in (None, f["instruction"]):
            lines.append(f"  {'problem_info':<16} {f['problem_info_instruction']}")
        lines.append(
            f"  {'demos':<16} {f['demos']}, {f['steps']} steps "
            f"({f['min_steps']}-{f['max_steps']} per demo)"
        )
        for key, shape in f["images"].items():
            lines.append(f"  {key:<16} {'x'.join(map(str, shape))}")
        pairs = zip(f["action_min"], f["action_max"])
        ranges = ", ".join(f"[{lo:+.2f}, {hi:+.2f}]" for lo, hi in pairs)
        lines.append(f"  {'actions':<16} {ranges}")
    return "\n".join(lines)
