"""The metadata of a local LeRobotDataset folder (v3.0 and v2.1): what it holds and where.

v3.0 (what the `lerobot` package writes since 0.4; many episodes per file):

    <root>/meta/info.json           codebase_version, fps, features {key: dtype, shape, names},
                                    data_path / video_path templates, chunks_size
    <root>/meta/tasks.parquet       one row per task: the task string and its task_index
    <root>/meta/episodes/chunk-*/file-*.parquet
                                    one row per episode: episode_index, length,
                                    data/chunk_index, data/file_index,
                                    dataset_from_index, dataset_to_index and, per video key,
                                    videos/<key>/chunk_index, .../file_index, .../from_timestamp
    <root>/data/chunk-000/file-000.parquet
                                    rows of several episodes: observation.state, action,
                                    timestamp, frame_index, episode_index, index, task_index
                                    (+ image features as {bytes: PNG, path} structs)
    <root>/videos/<key>/chunk-000/file-000.mp4
                                    the frames of several episodes back to back; episode e's
                                    frame with `timestamp` ts lies at from_timestamp(e) + ts

v2.1 (one file per episode): meta/tasks.jsonl ({task_index, task}), meta/episodes.jsonl
({episode_index, tasks, length}); data_path and video_path are formatted with episode_chunk =
episode_index // chunks_size and episode_index, and each episode's video starts at time 0.

Every problem raises a DataError naming the file and the key.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from atlas.data.errors import DataError

SUPPORTED_VERSIONS = ("v2.0", "v2.1", "v3.0")
# LIBERO's HDF5 camera names -> the keys LeRobot's, HuggingFaceVLA's and openpi's LIBERO copies use.
CAMERA_ALIASES: dict[str, tuple[str, ...]] = {
    "agentview_rgb": ("observation.images.image", "observation.images.agentview_image", "image"),
    "eye_in_hand_rgb": (
        "observation.images.wrist_image",
        "observation.images.image2",
        "observation.images.eye_in_hand_image",
        "wrist_image",
    ),
}
STATE_KEYS = ("observation.state", "state")


def libero_camera(name: str) -> str | None:
    """The LIBERO camera (simulator / HDF5 name) a camera name stands for, or None."""
    if name in CAMERA_ALIASES:
        return name
    return next((cam for cam, keys in CAMERA_ALIASES.items() if name in keys), None)


ACTION_KEYS = ("action", "actions")


@dataclass
class EpisodeMeta:
    """Where one episode's rows and frames are."""

    index: int  # episode_index
    length: int  # frames
    data_file: str  # path of the parquet file holding its rows, relative to the root
    # v3.0: the episode's rows are those with this episode_index inside data_file
    video_files: dict[str, str] = field(default_factory=dict)  # camera key -> mp4, relative
    video_from: dict[str, float] = field(default_factory=dict)  # camera key -> start time (s)


@dataclass
class LeRobotMeta:
    """meta/ of one dataset: version, fps, features, tasks and episodes."""

    root: Path
    version: str
    fps: float
    features: dict[str, dict[str, Any]]
    tasks: dict[int, str]  # task_index -> task
    episodes: list[EpisodeMeta]

    def path(self, relative: str) -> Path:
        return self.root / relative

    def kind(self, key: str) -> str:
        """dtype of a feature: "video", "image" or a numeric dtype name."""
        return str(self.features[key].get("dtype"))

    @property
    def camera_keys(self) -> list[str]:
        return [k for k, f in self.features.items() if f.get("dtype") in ("video", "image")]

    def frame_shape(self, key: str) -> tuple[int, int, int]:
        """(h, w, 3) of a camera feature, whichever order info.json lists the axes in."""
        feature = self.features[key]
        shape = [int(s) for s in feature.get("shape", [])]
        names = [str(n) for n in feature.get("names") or []]
        if len(shape) != 3:
            raise DataError(str(self.info_path), f"shape {shape}, expected 3 axes", key=key)
        if names[:1] in (["channels"], ["channel"]) or (shape[0] == 3 and shape[2] != 3):
            shape = [shape[1], shape[2], shape[0]]
        if shape[2] != 3:
            raise DataError(str(self.info_path), f"shape {shape}, expected 3 channels", key=key)
        return shape[0], shape[1], shape[2]

    @property
    def info_path(self) -> Path:
        return self.root / "meta" / "info.json"


def is_lerobot_root(path: str | Path) -> bool:
    """Whether `path` is a folder with meta/info.json (a LeRobotDataset root)."""
    try:
        return (Path(path) / "meta" / "info.json").is_file()
    except PermissionError:  # a folder this user may not enter: the path check then says so
        return False


def load_meta(root: str | Path) -> LeRobotMeta:
    """Read and check meta/ of the dataset at `root` (no data or video file is opened)."""
    root = Path(root)
    info_path = root / "meta" / "info.json"
    if not root.is_dir():
        raise DataError(str(root), "path not found (a LeRobotDataset folder with meta/info.json)")
    if not info_path.is_file():
        raise DataError(str(root), "not a LeRobotDataset: no meta/info.json")
    try:
        info = json.loads(info_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(str(info_path), f"unreadable JSON ({e})") from None
    version = info.get("codebase_version") if isinstance(info, dict) else None
    if version not in SUPPORTED_VERSIONS:
        msg = f"codebase_version {version!r} is not supported (one of {SUPPORTED_VERSIONS})"
        raise DataError(str(info_path), msg, key="codebase_version")
    for key in ("fps", "features", "data_path"):
        if key not in info:
            raise DataError(str(info_path), "missing key", key=key)
    features = info["features"]
    if not isinstance(features, dict) or not all(isinstance(f, dict) for f in features.values()):
        raise DataError(str(info_path), "expected {key: {dtype, shape, names}}", key="features")
    meta = LeRobotMeta(root, version, float(info["fps"]), features, {}, [])
    if version == "v3.0":
        meta.tasks = _tasks_v3(root)
        meta.episodes = _episodes_v3(root, info, meta.camera_keys)
    else:
        meta.tasks = _tasks_v2(root)
        meta.episodes = _episodes_v2(root, info, meta)
    if not meta.episodes:
        raise DataError(str(root), "the dataset has no episode")
    return meta


def resolve_key(meta: LeRobotMeta, wanted: str | None, candidates: Sequence[str], what: str) -> str:
    """The feature key to read for `wanted` (None: the first candidate present).

    A key the dataset lacks is refused with the keys it has, so a typo is a one-line fix.
    """
    names = [wanted] if wanted else []
    names += list(CAMERA_ALIASES.get(wanted or "", ())) if what == "camera" else []
    names += [] if wanted else list(candidates)
    for name in names:
        if name in meta.features:
            return name
    have = (
        meta.camera_keys
        if what == "camera"
        else [k for k in meta.features if k not in meta.camera_keys]
    )
    shown = wanted if wanted else " / ".join(candidates)
    msg = f"no {what} feature {shown!r} in this dataset; it has: {', '.join(have)}"
    raise DataError(str(meta.info_path), msg, key="features")


# ------------------------------------------------------------------------------------- tables


def _read_parquet(path: Path, columns: Sequence[str] | None = None) -> dict[str, list[Any]]:
    import pyarrow.parquet as pq  # imported here: only LeRobot datasets need pyarrow

    if not path.is_file():
        raise DataError(str(path), "file not found (the dataset is incomplete)")
    try:
        table = pq.read_table(path, columns=list(columns) if columns else None)
    except Exception as e:  # noqa: BLE001 - pyarrow raises many types for a damaged file
        raise DataError(str(path), f"unreadable parquet ({e})") from None
    return table.to_pydict()


def _tasks_v3(root: Path) -> dict[int, str]:
    path = root / "meta" / "tasks.parquet"
    table = _read_parquet(path)
    # LeRobot writes the task strings as the pandas index ("task" or __index_level_0__).
    text = next((k for k in ("task", "__index_level_0__") if k in table), None)
    if text is None or "task_index" not in table:
        raise DataError(str(path), "expected the columns task and task_index", key="task")
    return {int(i): str(t) for i, t in zip(table["task_index"], table[text])}


def _tasks_v2(root: Path) -> dict[int, str]:
    path = root / "meta" / "tasks.jsonl"
    rows = _read_jsonl(path)
    try:
        return {int(r["task_index"]): str(r["task"]) for r in rows}
    except (KeyError, TypeError, ValueError):
        raise DataError(str(path), "each line needs task_index and task", key="task") from None


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise DataError(str(path), "file not found (the dataset is incomplete)")
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(str(path), f"unreadable JSON lines ({e})") from None


def _episodes_v3(root: Path, info: dict[str, Any], cameras: list[str]) -> list[EpisodeMeta]:
    files = sorted((root / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
    if not files:
        raise DataError(str(root / "meta" / "episodes"), "no chunk-*/file-*.parquet files")
    video_template = info.get("video_path")
    episodes = []
    for path in files:
        columns = ["episode_index", "length", "data/chunk_index", "data/file_index"]
        for cam in cameras:
            if info["features"][cam].get("dtype") == "video":
                columns += [f"videos/{cam}/{k}" for k in ("chunk_index", "file_index")]
                columns.append(f"videos/{cam}/from_timestamp")
        table = _read_parquet(path, _present_columns(path, columns))
        for col in columns:
            if col not in table:
                raise DataError(str(path), "missing column", key=col)
        for row in range(len(table["episode_index"])):
            get = {c: table[c][row] for c in columns}
            ep = EpisodeMeta(
                int(get["episode_index"]),
                int(get["length"]),
                _format(
                    info["data_path"],
                    "data_path",
                    root,
                    chunk_index=get["data/chunk_index"],
                    file_index=get["data/file_index"],
                ),
            )
            for cam in cameras:
                if f"videos/{cam}/file_index" in get:
                    ep.video_files[cam] = _format(
                        video_template,
                        "video_path",
                        root,
                        video_key=cam,
                        chunk_index=get[f"videos/{cam}/chunk_index"],
                        file_index=get[f"videos/{cam}/file_index"],
                    )
                    ep.video_from[cam] = float(get[f"videos/{cam}/from_timestamp"])
            episodes.append(ep)
    return sorted(episodes, key=lambda e: e.index)


def _present_columns(path: Path, wanted: list[str]) -> list[str]:
    """The wanted columns a parquet file has (the missing ones are reported by the caller)."""
    import pyarrow.parquet as pq

    try:
        names = set(pq.read_schema(path).names)
    except Exception as e:  # noqa: BLE001
        raise DataError(str(path), f"unreadable parquet ({e})") from None
    return [c for c in wanted if c in names]


def _episodes_v2(root: Path, info: dict[str, Any], meta: LeRobotMeta) -> list[EpisodeMeta]:
    path = root / "meta" / "episodes.jsonl"
    chunks = int(info.get("chunks_size", 1000))
    episodes = []
    for row in _read_jsonl(path):
        if "episode_index" not in row or "length" not in row:
            raise DataError(str(path), "each line needs episode_index and length")
        index = int(row["episode_index"])
        where = dict(episode_chunk=index // chunks, episode_index=index)
        ep = EpisodeMeta(
            index, int(row["length"]), _format(info["data_path"], "data_path", root, **where)
        )
        for cam in meta.camera_keys:
            if meta.kind(cam) == "video":
                ep.video_files[cam] = _format(
                    info.get("video_path"), "video_path", root, video_key=cam, **where
                )
                ep.video_from[cam] = 0.0
        episodes.append(ep)
    return sorted(episodes, key=lambda e: e.index)


def _format(template: Any, name: str, root: Path, **values: Any) -> str:
    """A data_path / video_path template of info.json filled in."""
    where = str(root / "meta" / "info.json")
    if not isinstance(template, str):
        raise DataError(where, "missing path template (the dataset has video features)", key=name)
    try:
        return template.format(
            **{k: (int(v) if isinstance(v, (int, np.integer)) else v) for k, v in values.items()}
        )
    except (KeyError, ValueError, IndexError) as e:
        raise DataError(where, f"cannot fill the template {template!r} ({e})", key=name) from None
