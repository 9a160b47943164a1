"""LeRobotDataset folders (v3.0 and v2.1, videos or images) as a LiberoIndex (data.format: lerobot).

`build_lerobot_index` is the cheap metadata pass, as `build_index` is for HDF5: it reads meta/,
the state, action, timestamp and episode columns of the data files (pyarrow reads only those
columns, never an image), checks every video file the episodes point at (present, decodable,
long enough) and returns an index whose episodes the `LiberoDataset` samples exactly like HDF5
demos: history frames and action chunks within an episode, masks past its end, splits by episode,
normalization, augmentation and the feature cache all stay as they are.

Frames are read by `atlas.data.lerobot_frames.LeRobotFrameReader` (one decoder per worker and
file). Keys: `data.cameras` names camera features (the LIBERO names find the publications' keys,
see CAMERA_ALIASES); the state and action features default to observation.state / state and
action / actions.
"""

from __future__ import annotations

import glob
import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from atlas.data.errors import DataError
from atlas.data.lerobot_meta import (
    ACTION_KEYS,
    STATE_KEYS,
    LeRobotMeta,
    is_lerobot_root,
    load_meta,
    resolve_key,
)
from atlas.data.libero_hdf5 import Episode, LiberoIndex, noop_mask

log = logging.getLogger(__name__)
_DIMS = {"state": 8, "action": 7}  # what the policy reads: LIBERO's proprio and action widths


@dataclass
class CameraSource:
    """Where one camera's frames of one episode are."""

    path: str  # the mp4 (video) or the data parquet (image)
    key: str  # the feature key
    video: bool
    start: float = 0.0  # video: time of the episode's first frame in the file (s)


@dataclass
class EpisodeFrames:
    """Per raw step t of an episode: its timestamp and its row in the data parquet."""

    cameras: dict[str, CameraSource]  # data.cameras name -> source
    timestamps: np.ndarray  # float64 [T] seconds from the episode start
    rows: np.ndarray  # int64 [T] row numbers in the data parquet


@dataclass
class LeRobotIndex(LiberoIndex):
    """A LiberoIndex whose `files` are dataset roots and whose demos are `episode_NNNNNN`."""

    sources: dict[tuple[int, str], EpisodeFrames] = field(default_factory=dict)
    fps: dict[int, float] = field(default_factory=dict)  # root id -> fps

    def frame_reader(self):  # type: ignore[override]
        from atlas.data.lerobot_frames import LeRobotFrameReader

        return LeRobotFrameReader(self.sources, self.fps)

    def identity_files(self) -> list[str]:
        """Every file the samples are read from (the feature cache keys on them)."""
        paths = {src.path for fr in self.sources.values() for src in fr.cameras.values()}
        roots = [str(Path(f) / "meta" / "info.json") for f in self.files]
        return roots + sorted(paths)


def resolve_roots(paths: str | Path | Sequence[str | Path]) -> list[Path]:
    """Dataset root folders of data.paths (folders or globs of folders), in order."""
    items = [paths] if isinstance(paths, (str, Path)) else list(paths)
    if not items:
        raise DataError("<data.paths>", "no data paths given")
    roots: list[Path] = []
    for item in items:
        text = str(item)
        found = sorted(Path(p) for p in glob.glob(text)) if glob.has_magic(text) else [Path(text)]
        if not found:
            raise DataError(text, "the glob matches no folder")
        for path in found:
            if not path.exists():
                raise DataError(text, "path not found (a LeRobotDataset folder)")
            if not is_lerobot_root(path):
                raise DataError(str(path), "not a LeRobotDataset: no meta/info.json")
            roots.append(path)
    return list(dict.fromkeys(roots))


def build_lerobot_index(
    paths: str | Path | Sequence[str | Path],
    cameras: Sequence[str],
    *,
    state_key: str | None = None,
    action_key: str | None = None,
    filter_noops: bool = False,
    skip_bad_episodes: bool = False,
) -> LeRobotIndex:
    """Index every episode of the LeRobotDataset folders `paths` (see the module doc)."""
    roots = resolve_roots(paths)
    index = LeRobotIndex(files=[str(r) for r in roots], tasks=[], episodes=[])
    for root_id, root in enumerate(roots):
        meta = load_meta(root)
        index.fps[root_id] = meta.fps
        keys = {c: resolve_key(meta, c, (), "camera") for c in cameras}
        lowdim = {
            "state": resolve_key(meta, state_key, STATE_KEYS, "state"),
            "action": resolve_key(meta, action_key, ACTION_KEYS, "action"),
        }
        for what, key in lowdim.items():
            shape = list(meta.features[key].get("shape", []))
            if shape != [_DIMS[what]]:
                msg = f"shape {shape}, expected [{_DIMS[what]}] (LIBERO's {what} width)"
                raise DataError(str(meta.info_path), msg, key=key)
        _check_videos(meta, keys.values())
        for data_file, episodes in _by_data_file(meta).items():
            table = _read_lowdim(meta.path(data_file), lowdim)
            rows = _rows_by_episode(table)
            for ep in episodes:
                try:
                    ep_rows = rows.get(ep.index, np.empty(0, np.int64))
                    _add_episode(index, root_id, meta, ep, table, ep_rows, keys, filter_noops)
                except DataError as e:
                    if not skip_bad_episodes:
                        raise
                    log.warning("skipping bad episode: %s", e)
                    index.skipped += 1
    if not index.episodes:
        raise DataError(", ".join(index.files[:3]), "no usable episode in these folders")
    return index


def _by_data_file(meta: LeRobotMeta) -> dict[str, list]:
    groups: dict[str, list] = defaultdict(list)
    for ep in meta.episodes:
        groups[ep.data_file].append(ep)
    return groups


def _read_lowdim(path: Path, keys: dict[str, str]) -> dict[str, np.ndarray]:
    """The per-row columns of a data parquet as numpy arrays (images are not read)."""
    import pyarrow.parquet as pq

    names = ["episode_index", "frame_index", "timestamp", "task_index", *keys.values()]
    if not path.is_file():
        raise DataError(str(path), "data file not found (the dataset is incomplete)")
    try:
        schema = set(pq.read_schema(path).names)
        missing = [n for n in names if n not in schema]
        if missing:
            raise DataError(str(path), f"missing columns; it has {sorted(schema)}", key=missing[0])
        table = pq.read_table(path, columns=names)
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - pyarrow raises many types for a damaged file
        raise DataError(str(path), f"unreadable parquet ({e})") from None
    out = {n: table.column(n).to_numpy() for n in names[:4]}
    for what, key in keys.items():
        column = table.column(key).combine_chunks()
        width = _DIMS[what]
        values = (
            column.flatten().to_numpy(zero_copy_only=False) if hasattr(column, "flatten") else None
        )
        if values is None or len(values) != width * len(table):
            raise DataError(str(path), f"expected {width} values per row", key=key)
        out[what] = values.reshape(len(table), width).astype(np.float32)
    return out


def _rows_by_episode(table: dict[str, np.ndarray]) -> dict[int, np.ndarray]:
    """episode_index -> its row numbers in the file, in frame order (one sort for the file)."""
    order = np.lexsort((table["frame_index"], table["episode_index"]))
    if len(order) == 0:
        return {}
    episodes = table["episode_index"][order]
    starts = np.flatnonzero(np.r_[True, episodes[1:] != episodes[:-1]])
    bounds = np.r_[starts, len(order)]
    return {int(episodes[a]): order[a:b] for a, b in zip(bounds[:-1], bounds[1:])}


def _add_episode(
    index: LeRobotIndex,
    root_id: int,
    meta: LeRobotMeta,
    ep,
    table: dict[str, np.ndarray],
    rows: np.ndarray,
    keys: dict[str, str],
    filter_noops: bool,
) -> None:
    """Append one episode (its `rows` of `table`, in frame order) to the index."""
    demo = f"episode_{ep.index:06d}"
    where = str(meta.path(ep.data_file))
    if len(rows) != ep.length or len(rows) == 0:
        msg = f"{len(rows)} rows but meta/episodes says length {ep.length}"
        raise DataError(where, msg, demo=demo, key="episode_index")
    actions, proprio = table["action"][rows], table["state"][rows]
    for name, values in (("action", actions), ("state", proprio)):
        if not np.isfinite(values).all():
            bad = int(np.flatnonzero(~np.isfinite(values).all(axis=1))[0])
            raise DataError(where, f"NaN or inf at frame {bad}", demo=demo, key=name)
    task_id = int(table["task_index"][rows[0]])
    if task_id not in meta.tasks:
        raise DataError(where, f"task_index {task_id} is not in the task table", demo, "task_index")
    steps = np.arange(len(rows), dtype=np.int64)
    if filter_noops:
        steps = steps[~noop_mask(actions)]
        if len(steps) == 0:
            return
    instruction = meta.tasks[task_id]
    if instruction not in index.tasks:
        index.tasks.append(instruction)
    cameras = {}
    for name, key in keys.items():
        if meta.kind(key) == "video":
            cameras[name] = CameraSource(
                str(meta.path(ep.video_files[key])), key, True, ep.video_from[key]
            )
        else:
            cameras[name] = CameraSource(where, key, False)
    shapes = {name: meta.frame_shape(key) for name, key in keys.items()}
    task = index.tasks.index(instruction)
    index.episodes.append(
        Episode(root_id, demo, task, steps, actions[steps], proprio[steps], shapes)
    )
    timestamps = table["timestamp"][rows].astype(np.float64)
    index.sources[(root_id, demo)] = EpisodeFrames(cameras, timestamps, rows.astype(np.int64))


def _check_videos(meta: LeRobotMeta, keys) -> None:
    """Every mp4 the episodes need exists, decodes and is long enough (truncated files fail here).

    Opens each file once: its header, then the last frame any episode needs (one seek and at most
    a keyframe interval of decoding), which catches a file cut short behind an intact header.
    """
    from atlas.data.lerobot_frames import VideoDecoder, video_duration

    needed: dict[tuple[str, str], float] = {}
    for ep in meta.episodes:
        for key in keys:
            if meta.kind(key) == "video":
                if key not in ep.video_files:
                    raise DataError(str(meta.info_path), "no video file for episode", key=key)
                end = ep.video_from[key] + (ep.length - 1) / meta.fps
                where = (ep.video_files[key], key)
                needed[where] = max(needed.get(where, 0.0), end)
    for (relative, key), end in needed.items():
        path = meta.path(relative)
        if not path.is_file():
            raise DataError(str(path), "video file not found (the dataset is incomplete)", key=key)
        duration = video_duration(path, key)
        if duration + 0.5 / meta.fps < end:
            msg = f"holds {duration:.2f} s of video but the episodes need {end:.2f} s (truncated?)"
            raise DataError(str(path), msg, key=key)
        decoder = VideoDecoder(str(path), key, meta.fps)
        try:
            decoder.read_into(end, np.empty(meta.frame_shape(key), np.uint8))
        finally:
            decoder.close()
