"""The original LIBERO HDF5 files: finding them, checking them and indexing their demos.

Layout (one file per task, see docs/LIBERO.md §1):

    <suite>/<task_name>_demo.hdf5
      data/                   attrs problem_info (JSON), env_args (JSON), bddl_file_name, ...
        demo_N/               attrs num_samples, model_file, init_state
          actions             float64 [T, 7]
          obs/agentview_rgb   uint8   [T, h, w, 3]   (stored upside down, OpenGL rows)
          obs/eye_in_hand_rgb uint8   [T, h, w, 3]
          obs/ee_states       float64 [T, 6]         eef position (3) + axis-angle (3)
          obs/gripper_states  float64 [T, 2]

`build_index` is the cheap metadata pass run before training: it reads shapes, dtypes and
attributes, plus the small per-step arrays (actions and the 8-value proprio), never an image. Every
problem becomes a `DataError` naming the file, the demo and the key. The torch `Dataset` over this
index lives in `atlas.data.dataset`.
"""

from __future__ import annotations

import glob
import json
import logging
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import h5py
import numpy as np

from atlas.data.errors import DataError
from atlas.data.frame_reader import FrameReader

log = logging.getLogger(__name__)

InstructionSource = Literal["filename", "problem_info"]
# Per-step arrays the policy needs: key -> (trailing shape, dtype kind). `None` = any size.
_STEP_KEYS: dict[str, tuple[tuple[int | None, ...], str]] = {
    "actions": ((7,), "f"),
    "obs/ee_states": ((6,), "f"),
    "obs/gripper_states": ((2,), "f"),
}
_IMAGE_SPEC: tuple[tuple[int | None, ...], str] = ((None, None, 3), "u")
ACTION_LIMIT = 1.0  # LIBERO actions are normalized controller commands in [-1, 1]
NOOP_THRESHOLD = 1e-4  # OpenVLA: ||a[:6]|| below this with an unchanged gripper is a no-op


@dataclass
class Episode:
    """One demo of one file, reduced to the steps that are sampled.

    `steps` are the raw timesteps kept (all of them, or those left after no-op filtering); the
    per-step arrays are already restricted to them, so position k of an episode is raw step
    `steps[k]` with action `actions[k]` and state `proprio[k]`.
    """

    file: int  # index into LiberoIndex.files
    demo: str  # "demo_N"
    task: int  # index into LiberoIndex.tasks
    steps: np.ndarray  # int64 [N]
    actions: np.ndarray  # float32 [N, 7]
    proprio: np.ndarray  # float32 [N, 8] ee_states (6) + gripper_states (2)
    frame_shapes: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # camera -> h,w,3


@dataclass
class LiberoIndex:
    """Every usable episode of a set of files, with the task list shared by all splits."""

    files: list[str]
    tasks: list[str]  # instructions, in order of first appearance
    episodes: list[Episode]
    skipped: int = 0  # bad episodes skipped (data.skip_bad_episodes)

    @property
    def num_samples(self) -> int:
        return sum(len(ep.steps) for ep in self.episodes)

    def frame_reader(self) -> FrameReader:
        """A per-process reader of this index's frames (formats with other files override it)."""
        return FrameReader(self.files)

    def identity_files(self) -> list[str]:
        """Every file the samples are read from (the feature cache keys on them)."""
        return list(self.files)


# ------------------------------------------------------------------------------------ paths


def resolve_paths(paths: str | Path | Sequence[str | Path]) -> list[Path]:
    """Expand suite folders (searched recursively), files and globs into sorted HDF5 files.

    Several suites can be mixed; duplicates are dropped. A path matching nothing is a DataError.
    """
    items = [paths] if isinstance(paths, (str, Path)) else list(paths)
    if not items:
        raise DataError("<data.paths>", "no data paths given")
    found: list[Path] = []
    for item in items:
        try:
            found.extend(_expand(str(item)))
        except PermissionError:  # a folder on the way that this user may not enter
            raise DataError(str(item), "permission denied (make it readable)") from None
    return list(dict.fromkeys(found))  # keeps order, drops repeats


def _expand(text: str) -> list[Path]:
    """One data path (a glob, a suite folder or a file) as its HDF5 files."""
    if glob.has_magic(text):
        files = [p for p in sorted(Path(p) for p in glob.glob(text, recursive=True)) if p.is_file()]
        if not files:
            raise DataError(text, "the glob matches no file")
        return files
    if Path(text).is_dir():
        root = Path(text)
        # Hidden entries are skipped: e.g. a dataset still being generated (.name.tmp-*).
        files = sorted(
            p
            for p in root.rglob("*.hdf5")
            if not any(part.startswith(".") for part in p.relative_to(root).parts)
        )
        if not files:
            raise DataError(
                text, "no .hdf5 files in this folder (nor a LeRobotDataset: no meta/info.json)"
            )
        return files
    if Path(text).is_file():
        return [Path(text)]
    raise DataError(text, "path not found (a suite folder, an .hdf5 file or a glob)")


def instruction_from_filename(path: str | Path) -> str:
    """The instruction every LIBERO consumer prompts with (docs/LIBERO.md §2).

    Drops `_demo.hdf5`, every word up to and including the one containing `SCENE`, and turns `_`
    into spaces: `KITCHEN_SCENE10_close_the_top_drawer_demo.hdf5` -> "close the top drawer".
    """
    stem = Path(path).name
    for suffix in (".hdf5", "_demo"):
        stem = stem.removesuffix(suffix)
    words = stem.split("_")
    scene = next((i for i, w in enumerate(words) if "SCENE" in w), -1)
    return " ".join(w for w in words[scene + 1 :] if w)


def instruction_from_problem_info(file: h5py.File, path: str | Path) -> str:
    """The `language_instruction` inside the `data` group's problem_info JSON attribute."""
    key = "data.attrs['problem_info']"
    raw = file["data"].attrs.get("problem_info")
    if raw is None:
        raise DataError(str(path), "missing attribute (needed by instruction_source)", key=key)
    try:
        info = json.loads(raw.decode() if isinstance(raw, bytes) else str(raw))
        return str(info["language_instruction"]).strip()
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise DataError(str(path), f"no language_instruction in the JSON ({e})", key=key) from None


def open_hdf5(path: str | Path) -> h5py.File:
    """`path` opened read-only; any failure is a DataError that names the file and the cause.

    h5py reports a truncated file, a damaged header, a missing signature and a permission problem
    all as a bare OSError without the file's name.
    """
    try:
        return h5py.File(path, "r")
    except PermissionError:
        raise DataError(str(path), "permission denied (make the file readable)") from None
    except OSError as e:
        text = str(e)
        if "signature not found" in text:
            problem = "not an HDF5 file (no HDF5 signature)"
        else:
            cause = text[text.find("(") + 1 : text.rfind(")")] if "(" in text else text
            problem = f"unreadable HDF5 file ({cause}): a partial copy or download? copy it again"
        raise DataError(str(path), problem) from None


@contextmanager
def read_hdf5(path: str | Path) -> Iterator[h5py.File]:
    """`open_hdf5` as a context in which damage found while reading (past the header: a bad
    block, a broken group) is a DataError naming the file too."""
    with open_hdf5(path) as file:
        try:
            yield file
        except (OSError, KeyError, RuntimeError) as e:
            raise DataError(str(path), f"unreadable HDF5 file ({e})") from None


# ------------------------------------------------------------------------------------- checks


def demo_keys(file: h5py.File, path: str | Path) -> list[str]:
    """The demo groups of a file in numeric order (demo_2 before demo_10)."""
    if not isinstance(file.get("data"), h5py.Group):
        raise DataError(str(path), "missing group (not a LIBERO demo file?)", key="data")
    names = [k for k, v in file["data"].items() if isinstance(v, h5py.Group)]
    if not names:
        raise DataError(str(path), "no demo groups", key="data")
    return sorted(names, key=lambda n: (int(m.group()) if (m := re.search(r"\d+$", n)) else -1, n))


def _dataset_problem(grp: h5py.Group, key: str, spec: tuple) -> str | None:
    """What is wrong with dataset `key` of a demo (presence, trailing shape, dtype), or None."""
    trailing, kind = spec
    obj = grp.get(key)
    if not isinstance(obj, h5py.Dataset):
        return "missing dataset"
    shape_ok = obj.ndim == 1 + len(trailing) and all(
        want is None or got == want for got, want in zip(obj.shape[1:], trailing)
    )
    if not shape_ok:
        want = "(T, " + ", ".join("*" if d is None else str(d) for d in trailing) + ")"
        return f"shape {obj.shape}, expected {want}"
    if obj.dtype.kind != kind:
        return f"dtype {obj.dtype}, expected {'a float dtype' if kind == 'f' else 'uint8'}"
    if kind == "u" and obj.dtype != np.uint8:
        return f"dtype {obj.dtype}, expected uint8"
    return None


def check_demo(
    file: h5py.File, path: str | Path, demo: str, cameras: Sequence[str], read_values: bool = True
) -> tuple[list[DataError], dict[str, np.ndarray]]:
    """Every problem of one demo (none raised), and its per-step arrays as float64 [T, D].

    Checks each per-step array and camera (present, shape, dtype), that all have the same number
    of steps (at least one), and that the per-step arrays are finite. The arrays are returned only
    when the demo has no problem. No image is read; with `read_values=False` nothing but metadata
    (no finiteness check, no arrays returned).
    """
    where, grp = (str(path), f"data/{demo}"), file["data"][demo]
    specs = {**_STEP_KEYS, **{f"obs/{c}": _IMAGE_SPEC for c in cameras}}
    problems = [
        DataError(where[0], problem, demo=where[1], key=key)
        for key, spec in specs.items()
        if (problem := _dataset_problem(grp, key, spec)) is not None
    ]
    if problems:
        return problems, {}
    length = grp["actions"].shape[0]
    if length == 0:
        return [DataError(where[0], "empty demo (0 steps)", demo=where[1], key="actions")], {}
    for key in specs:
        if (steps := grp[key].shape[0]) != length:
            problem = f"{steps} steps but actions has {length}"
            problems.append(DataError(where[0], problem, demo=where[1], key=key))
    if not read_values:
        return problems, {}
    values = {k: np.asarray(grp[k][()], dtype=np.float64) for k in _STEP_KEYS}
    for key, value in values.items():
        if not np.isfinite(value).all():
            bad = np.flatnonzero(~np.isfinite(value).all(axis=1))
            problem = f"NaN or inf at {len(bad)} step(s), the first at step {int(bad[0])}"
            problems.append(DataError(where[0], problem, demo=where[1], key=key))
    return problems, ({} if problems else values)


def actions_out_of_range(actions: np.ndarray, limit: float = ACTION_LIMIT) -> str | None:
    """A note when actions [T, 7] leave [-limit, limit] (LIBERO's controller range), else None."""
    outside = np.abs(actions) > limit
    if not outside.any():
        return None
    step, dim = (int(i) for i in np.argwhere(outside)[0])
    return (
        f"{int(outside.sum())} value(s) outside [-{limit:g}, {limit:g}] (LIBERO actions are "
        f"normalized controller commands), the first {actions[step, dim]:g} at step {step}, "
        f"dimension {dim}: are these raw, unscaled commands?"
    )


def read_demo(
    file: h5py.File, path: str | Path, demo: str, cameras: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, dict[str, tuple[int, int, int]]]:
    """Check one demo (raising its first problem) and read its small arrays (no image is read).

    Returns actions float32 [T, 7], proprio float32 [T, 8] and the frame shape of each camera.
    """
    problems, values = check_demo(file, path, demo, cameras)
    if problems:
        raise problems[0]
    proprio = np.concatenate([values["obs/ee_states"], values["obs/gripper_states"]], axis=1)
    grp = file["data"][demo]
    shapes = {c: tuple(int(s) for s in grp[f"obs/{c}"].shape[1:]) for c in cameras}
    return values["actions"].astype(np.float32), proprio.astype(np.float32), shapes  # type: ignore[return-value]


def noop_mask(actions: np.ndarray) -> np.ndarray:
    """True for OpenVLA's no-op steps: ||a[:6]|| < 1e-4 and the gripper command unchanged.

    actions [T, 7] -> bool [T]. The first step has no previous command, so only its norm counts.
    """
    small = np.linalg.norm(actions[:, :6], axis=1) < NOOP_THRESHOLD
    same_gripper = np.ones(len(actions), dtype=bool)
    same_gripper[1:] = actions[1:, 6] == actions[:-1, 6]
    return small & same_gripper


# -------------------------------------------------------------------------------------- index


def build_index(
    paths: str | Path | Sequence[str | Path],
    cameras: Sequence[str],
    *,
    instruction_source: InstructionSource = "filename",
    filter_noops: bool = False,
    skip_bad_episodes: bool = False,
) -> LiberoIndex:
    """Index every demo of `paths` (folders, files, globs) in one cheap metadata pass.

    Each problem raises a DataError naming the file, demo and key; with `skip_bad_episodes` the bad
    demo (or the whole unreadable file) is skipped with a warning and counted instead.
    """
    files = resolve_paths(paths)
    index = LiberoIndex(files=[str(f) for f in files], tasks=[], episodes=[])
    for file_id, path in enumerate(files):
        try:
            _index_file(
                index, file_id, path, cameras, instruction_source, filter_noops, skip_bad_episodes
            )
        except DataError as e:
            if not skip_bad_episodes:
                raise
            log.warning("skipping bad file: %s", e)
            index.skipped += 1
    if index.skipped:
        log.warning("skipped %d bad episodes or files (data.skip_bad_episodes)", index.skipped)
    if not index.episodes:
        raise DataError(", ".join(index.files[:3]), "no usable episode in these files")
    return index


def _index_file(
    index: LiberoIndex,
    file_id: int,
    path: Path,
    cameras: Sequence[str],
    source: InstructionSource,
    filter_noops: bool,
    skip_bad: bool,
) -> None:
    """Append the episodes of one file to `index` (see build_index)."""
    with read_hdf5(path) as file:
        demos = demo_keys(file, path)
        if source == "filename":
            instruction = instruction_from_filename(path)
        else:
            instruction = instruction_from_problem_info(file, path)
        out_of_range: list[tuple[str, str]] = []  # (demo, note): one warning for the file
        for demo in demos:
            try:
                actions, proprio, shapes = _read_demo_wrapped(file, path, demo, cameras)
            except DataError as e:
                if not skip_bad:
                    raise
                log.warning("skipping bad episode: %s", e)
                index.skipped += 1
                continue
            if (note := actions_out_of_range(actions)) is not None:
                out_of_range.append((demo, note))
            steps = np.arange(len(actions), dtype=np.int64)
            if filter_noops:
                steps = steps[~noop_mask(actions)]
                if len(steps) == 0:
                    log.info("%s: data/%s: every step is a no-op; dropped", path, demo)
                    continue
            if instruction not in index.tasks:
                index.tasks.append(instruction)
            task = index.tasks.index(instruction)
            episode = Episode(file_id, demo, task, steps, actions[steps], proprio[steps], shapes)
            index.episodes.append(episode)
    if out_of_range:
        demo, note = out_of_range[0]
        log.warning(
            "%s: actions outside [-1, 1] in %d of %d demos; data/%s: actions: %s",
            path,
            len(out_of_range),
            len(demos),
            demo,
            note,
        )


def _read_demo_wrapped(
    file: h5py.File, path: Path, demo: str, cameras: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, dict[str, tuple[int, int, int]]]:
    """read_demo, with low-level HDF5 failures (corrupt blocks) turned into DataErrors."""
    try:
        return read_demo(file, path, demo, cameras)
    except DataError:
        raise
    except (OSError, KeyError, TypeError, ValueError) as e:
        raise DataError(str(path), f"unreadable ({e})", demo=f"data/{demo}") from None
