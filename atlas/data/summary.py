"""What is in a set of LIBERO HDF5 files or LeRobotDataset folders, and what is wrong with them
(`atlas data inspect`).

`inspect_files` checks every demo of every file with the same rules as the training reader
(`check_demo`: datasets present, dtypes, shapes, lengths agree, finite values) plus LIBERO's action
range, and lists each problem with its file, demo and key; an unreadable file is one problem and
the rest are still checked. `quick=True` checks only the first demo of each file and takes the
others' lengths from metadata (the fast overview of a large suite). Images are never read.
LeRobotDataset folders are summarized task by task after the checks training runs on them (their
first problem is raised as a DataError).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from atlas.data.errors import DataError
from atlas.data.lerobot_meta import is_lerobot_root, load_meta
from atlas.data.libero_hdf5 import (
    actions_out_of_range,
    check_demo,
    demo_keys,
    instruction_from_filename,
    instruction_from_problem_info,
    read_hdf5,
    resolve_paths,
)


def inspect_files(
    paths: str | Path | Sequence[str | Path],
    cameras: Sequence[str] | None = None,
    quick: bool = False,
) -> dict[str, Any]:
    """Per file: suite, instructions, demos, steps, image shapes, action ranges; and the problems.

    `cameras`: the image datasets every demo must have (default: every `obs/*_rgb` dataset found in
    any demo of the file). Returns {"files", "problems", "num_files", "num_demos", "num_steps"};
    each problem is {"file", "demo", "key", "problem"} (demo and key None for a whole file). A path
    that matches nothing raises DataError.
    """
    items = [paths] if isinstance(paths, (str, Path)) else list(paths)
    if items and all(is_lerobot_root(p) for p in items):
        files = summarize_lerobot(items)
        return {"files": files, "problems": [], **_totals(files)}
    files, problems = [], []
    for path in resolve_paths(paths):
        found: list[DataError] = []
        try:
            with read_hdf5(path) as f:
                files.append(_summarize_file(f, path, cameras, quick, found))
        except DataError as e:  # unreadable: one problem, and on to the next file
            found.append(e)
        problems += [
            {"file": e.file, "demo": e.demo, "key": e.key, "problem": e.problem} for e in found
        ]
    return {"files": files, "problems": problems, **_totals(files)}


def _totals(files: list[dict[str, Any]]) -> dict[str, int]:
    return {
        "num_files": len({f["path"] for f in files}),  # a LeRobot folder: one entry per task
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


def _summarize_file(
    f: h5py.File, path: Path, cameras: Sequence[str] | None, quick: bool, problems: list[DataError]
) -> dict[str, Any]:
    """One file's summary; its problems are appended to `problems` (none looked for when quick)."""
    demos = demo_keys(f, path)
    wanted = list(cameras) if cameras is not None else _rgb_datasets(f, demos)
    lengths, ranges = [], []
    for demo in demos[:1] if quick else demos:
        found, values = check_demo(f, path, demo, wanted)
        problems += found
        if values:
            actions = values["actions"]
            lengths.append(len(actions))
            ranges.append((actions.min(axis=0), actions.max(axis=0)))
            if (note := actions_out_of_range(actions)) is not None:
                problems.append(DataError(str(path), note, demo=f"data/{demo}", key="actions"))
    if quick:  # the other demos' lengths from metadata alone
        counts = (f["data"][d].get("actions") for d in demos)
        lengths = [int(a.shape[0]) for a in counts if isinstance(a, h5py.Dataset) and a.ndim]
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
        "min_steps": int(min(lengths, default=0)),
        "max_steps": int(max(lengths, default=0)),
        "images": images,
        "action_min": [round(float(v), 4) for v in np.min([r[0] for r in ranges], axis=0)]
        if ranges
        else [],
        "action_max": [round(float(v), 4) for v in np.max([r[1] for r in ranges], axis=0)]
        if ranges
        else [],
    }


def _rgb_datasets(f: h5py.File, demos: Sequence[str]) -> list[str]:
    """Camera names (`obs/<name>_rgb`) present in any demo: each demo must then have them all."""
    names: dict[str, None] = {}
    for demo in demos:
        obs = f["data"][demo].get("obs")
        if isinstance(obs, h5py.Group):
            names.update((k, None) for k in obs.keys() if k.endswith("_rgb"))
    return list(names)


def format_summary(summary: dict[str, Any]) -> str:
    """A human-readable report of the files `inspect_files` read (`format_problems`: the rest)."""
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
        lines.append(f"  {'actions':<16} {ranges or 'no valid demo'}")
    return "\n".join(lines)


def format_problems(summary: dict[str, Any]) -> str:
    """One line per problem, `FILE: DEMO: KEY: problem`, under a count ("" when there is none)."""
    problems = summary["problems"]
    lines = [f"{len(problems)} problem(s):"] if problems else []
    for p in problems:
        where = ": ".join(part for part in (p["file"], p["demo"], p["key"]) if part)
        lines.append(f"  {where}: {p['problem']}")
    return "\n".join(lines)
