"""Everything a run reads from disk, checked before anything is written.

`input_problems(cfg)` looks at each path the config names: the data (paths resolve to HDF5 files
that open, and every demo has the datasets and cameras training reads, with the right shapes,
dtypes and lengths), the VGGT checkpoint, the language model folder, the statistics file,
`checkpoint.load_from` and a `checkpoint.resume` PATH. It reads only metadata (file headers,
dataset shapes), never an array. Training calls `check_inputs` before it creates the run
directory; `atlas doctor` lists the same problems. What the arrays hold (finite values, the action
range) and a checkpoint's tensors are checked when they are read, by the module that reads them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import h5py

from atlas.config import ConfigError
from atlas.config.schema import AtlasConfig, DataConfig
from atlas.data.errors import DataError
from atlas.data.libero_hdf5 import check_demo, demo_keys, read_hdf5, resolve_paths

log = logging.getLogger(__name__)

Problem = tuple[str, str]  # (dotted key, what is wrong and how to fix it)


def check_inputs(cfg: AtlasConfig) -> None:
    """Raise one ConfigError listing every problem of `input_problems` (exit 2, nothing written)."""
    problems = input_problems(cfg)
    if problems:
        raise ConfigError("; ".join(f"{key}: {msg}" for key, msg in problems))


def input_problems(cfg: AtlasConfig) -> list[Problem]:
    """(dotted key, problem) for each input of `cfg` that is missing or unusable; [] when sound."""
    return [*data_problems(cfg.data), *weight_problems(cfg)]


def data_problems(d: DataConfig) -> list[Problem]:
    """data.paths resolve to readable HDF5 files whose demos have the layout training reads."""
    paths = list(d.paths)
    if d.synthetic is not None and paths and not Path(paths[0]).exists():
        paths = paths[1:]  # generated on the first run
    if d.format != "libero_hdf5":  # LeRobotDataset folders: checked in depth by their reader
        return [("data.paths", f"{p}: folder not found") for p in paths if not Path(p).is_dir()]
    if not paths:
        return []
    try:
        files = resolve_paths(paths)
    except DataError as e:
        return [("data.paths", str(e))]
    problems: list[Problem] = []
    for path in files:
        try:
            problems += _file_problems(path, d.cameras, d.skip_bad_episodes)
        except DataError as e:  # unreadable: skipped later under skip_bad_episodes
            if not d.skip_bad_episodes:
                problems.append(("data.paths", f"{e} (or set data.skip_bad_episodes: true)"))
    return problems


def _file_problems(path: Path, cameras: Sequence[str], skip_bad: bool) -> list[Problem]:
    """The layout of every demo of `path` (datasets, cameras, shapes, dtypes, lengths), from
    metadata alone; the first problem is reported, with how many more there are. Under
    skip_bad_episodes only a file with no usable demo is a problem (the others are skipped)."""
    with read_hdf5(path) as f:
        demos = demo_keys(f, path)
        found = [
            (demo, error)
            for demo in demos
            for error in check_demo(f, path, demo, cameras, read_values=False)[0]
        ]
        first = f["data"][demos[0]].get("obs")
        items = first.items() if isinstance(first, h5py.Group) else []
        has = sorted(k for k, v in items if getattr(v, "ndim", 0) == 4)
    if not found or (skip_bad and len({demo for demo, _ in found}) < len(demos)):
        return []
    error = found[0][1]
    key, hint = "data.paths", " (fix or remove the demo, or set data.skip_bad_episodes: true)"
    if error.key in {f"obs/{c}" for c in cameras} and error.problem == "missing dataset":
        key = "data.cameras"
        hint = f" (its first demo has: {', '.join(has) or 'no camera'}; list only those)"
    more = f"; {len(found) - 1} more in this file (`atlas data inspect` lists them)"
    return [(key, f"{error}{hint}{more if len(found) > 1 else ''}")]


def weight_problems(cfg: AtlasConfig) -> list[Problem]:
    """The VGGT checkpoint, language model folder, stats file, load_from and resume PATH exist."""
    from atlas.models.language import check_model_folder, resolve_language_path

    problems: list[Problem] = []
    vggt = cfg.model.vggt.checkpoint
    if vggt is not None and not Path(vggt).is_file():
        problems.append(
            (
                "model.vggt.checkpoint",
                f"{vggt} not found (a local model.pt or model.safetensors of VGGT-1B; null trains "
                "from a random initialisation)",
            )
        )
    key = "model.language_encoder.name_or_path"
    try:
        check_model_folder(resolve_language_path(cfg.model.language_encoder.name_or_path))
    except FileNotFoundError as e:
        problems.append((key, str(e)))
    stats = cfg.data.stats_path
    if stats is not None and not Path(stats).is_file():
        problems.append(
            ("data.stats_path", f"{stats} not found (write it with `atlas data stats --out`)")
        )
    ckpt = cfg.checkpoint
    if ckpt.load_from is not None and not Path(ckpt.load_from).exists():
        problems.append(
            (
                "checkpoint.load_from",
                f"{ckpt.load_from} not found (an export such as best/ or final/, an iter_N "
                "checkpoint, a run directory or a .safetensors file)",
            )
        )
    if ckpt.resume not in (None, "auto") and not Path(ckpt.resume).exists():
        problems.append(
            (
                "checkpoint.resume",
                f"{ckpt.resume} not found (an iter_N directory, a run directory, or 'auto')",
            )
        )
    return problems
