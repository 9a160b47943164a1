"""`atlas data convert`: LIBERO HDF5 demos -> a LeRobotDataset v3.0 folder.

The folder follows the layout the `lerobot` package (0.6) writes, as its own reader expects it
(see `atlas.data.lerobot_meta` for the tree), with the conventions of the LIBERO publications:

    observation.images.image        agentview_rgb,   AV1 (libsvtav1, crf 30, keyframe every 2
    observation.images.wrist_image  eye_in_hand_rgb  frames, yuv420p), or PNG bytes with --images;
                                    frames rotated 180 degrees, as the publications store them
                                    (`--stored-orientation none` keeps the simulator's rows)
    observation.state               float32 [8]  ee_states (6) + gripper_states (2)
    action                          float32 [7]
    timestamp = frame_index / fps, one task per HDF5 file (its instruction)

Every episode of every camera goes back to back into videos/<key>/chunk-000/file-000.mp4 (a new
file past `video_file_mb`), all rows into data/chunk-000/file-000.parquet (a new file past
`data_file_mb`). The folder is written under a temporary name and renamed when complete, so a
failed conversion leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import h5py
import numpy as np

from atlas.data.errors import DataError
from atlas.data.libero_hdf5 import LiberoIndex, build_index
from atlas.data.stats import StreamingStats

KEYS = {
    "agentview_rgb": "observation.images.image",
    "eye_in_hand_rgb": "observation.images.wrist_image",
}
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
_LOWDIM_ROW_BYTES = 4 * (8 + 7 + 1) + 8 * 4  # state, action, timestamp, four int64 indices
ENCODER = {"codec": "libsvtav1", "options": {"g": "2", "crf": "30", "preset": "12"}}


def convert_to_lerobot(
    paths: str | Path | Sequence[str | Path],
    out: str | Path,
    *,
    fps: int = 10,
    video: bool = True,
    stored_orientation: Literal["rot180", "none"] = "rot180",
    data_file_mb: int = 100,
    video_file_mb: int = 200,
) -> Path:
    """Write the HDF5 suite(s) `paths` as a LeRobotDataset v3.0 folder `out` (see module doc)."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is not empty: choose a new output folder")
    index = build_index(paths, list(KEYS))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        writer = _Writer(tmp, index, fps, video, stored_orientation, data_file_mb, video_file_mb)
        for e in range(len(index.episodes)):
            writer.add_episode(e)
        writer.finish()
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


class _Writer:
    """Accumulates rows and encodes frames episode by episode; writes meta/ at the end."""

    def __init__(self, root, index: LiberoIndex, fps, video, orientation, data_mb, video_mb):
        self.root, self.index, self.fps, self.video = root, index, fps, video
        self.rotate = orientation == "rot180"
        self.data_limit, self.video_limit = data_mb * 2**20, video_mb * 2**20
        self.rows: list[dict[str, Any]] = []  # rows of the current data file
        self.row_bytes, self.data_file, self.frames = 0, 0, 0
        self.episodes: list[dict[str, Any]] = []
        self.videos = {key: _VideoFile(root, key, fps) for key in KEYS.values()} if video else {}
        self.stats = {"observation.state": StreamingStats(8), "action": StreamingStats(7)}
        self.pixels = {key: StreamingStats(3, capacity=10_000) for key in KEYS.values()}
        self.shapes: dict[str, tuple[int, ...]] = {}

    def add_episode(self, e: int) -> None:
        ep = self.index.episodes[e]
        path = self.index.files[ep.file]
        with h5py.File(path, "r") as f:
            frames = {KEYS[c]: f["data"][ep.demo]["obs"][c][()] for c in KEYS}
        n = len(ep.steps)
        meta: dict[str, Any] = {
            "episode_index": e,
            "tasks": [self.index.tasks[ep.task]],
            "length": n,
        }
        if self.rows and self.row_bytes > self.data_limit:
            self._flush_rows()
        meta |= {"data/chunk_index": 0, "data/file_index": self.data_file}
        meta |= {"dataset_from_index": self.frames, "dataset_to_index": self.frames + n}
        rows: list[dict[str, Any]] = [{} for _ in range(n)]
        for key, images in frames.items():
            images = images[:, ::-1, ::-1] if self.rotate else images
            self.shapes[key] = images.shape[1:]
            sample = images[:: max(1, n // 8)].reshape(-1, 3)[::97] / 255.0
            self.pixels[key].update(sample)
            if self.video:
                meta |= self.videos[key].add(np.ascontiguousarray(images), self.video_limit)
            else:
                encoded = [_png(img) for img in images]
                self.row_bytes += sum(len(b) for b in encoded)
                for t, data in enumerate(encoded):
                    rows[t][key] = {"bytes": data, "path": f"frame_{self.frames + t:06d}.png"}
        for t, row in enumerate(rows):
            row |= {"observation.state": ep.proprio[t], "action": ep.actions[t]}
            row |= {"timestamp": np.float32(t / self.fps), "frame_index": t, "episode_index": e}
            row |= {"index": self.frames + t, "task_index": ep.task}
        self.rows.extend(rows)
        self.row_bytes += n * _LOWDIM_ROW_BYTES
        self.stats["observation.state"].update(ep.proprio)
        self.stats["action"].update(ep.actions)
        self.frames += n
        self.episodes.append(meta | {"meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0})

    def _flush_rows(self) -> None:
        from atlas.data.lerobot_tables import write_data_file

        write_data_file(
            self.root / DATA_PATH.format(chunk_index=0, file_index=self.data_file),
            self.rows,
            list(self.shapes) if not self.video else [],
        )
        self.rows, self.row_bytes = [], 0
        self.data_file += 1

    def finish(self) -> None:
        from atlas.data.lerobot_tables import write_episodes, write_tasks

        if not self.episodes:
            raise DataError(str(self.root), "no episode to convert")
        self._flush_rows()
        for writer in self.videos.values():
            writer.close()
        write_tasks(self.root / "meta" / "tasks.parquet", self.index.tasks)
        write_episodes(
            self.root / "meta" / "episodes" / "chunk-000" / "file-000.parquet", self.episodes
        )
        (self.root / "meta" / "info.json").write_text(json.dumps(self._info(), indent=4))
        (self.root / "meta" / "stats.json").write_text(json.dumps(self._stats(), indent=4))

    def _info(self) -> dict[str, Any]:
        cams = {}
        for key, (h, w, c) in self.shapes.items():
            cams[key] = {
                "dtype": "video" if self.video else "image",
                "shape": [h, w, c],
                "names": ["height", "width", "channel"],
            }
            if self.video:
                cams[key]["info"] = {
                    "video.height": h,
                    "video.width": w,
                    "video.codec": "av1",
                    "video.pix_fmt": "yuv420p",
                    "video.fps": self.fps,
                    "video.channels": c,
                    "has_audio": False,
                    "video.g": 2,
                    "video.crf": 30,
                    "is_depth_map": False,
                }
        scalar = {"dtype": "int64", "shape": [1], "names": None}
        features = {
            **cams,
            "observation.state": {"dtype": "float32", "shape": [8], "names": ["state"]},
            "action": {"dtype": "float32", "shape": [7], "names": ["actions"]},
            "timestamp": {"dtype": "float32", "shape": [1], "names": None},
            **{k: dict(scalar) for k in ("frame_index", "episode_index", "index", "task_index")},
        }
        return {
            "codebase_version": "v3.0",
            "fps": self.fps,
            "features": features,
            "total_episodes": len(self.episodes),
            "total_frames": self.frames,
            "total_tasks": len(self.index.tasks),
            "chunks_size": 1000,
            "data_files_size_in_mb": max(1, self.data_limit // 2**20),
            "video_files_size_in_mb": max(1, self.video_limit // 2**20),
            "data_path": DATA_PATH,
            "video_path": VIDEO_PATH if self.video else None,
            "robot_type": "panda",
            "splits": {"train": f"0:{len(self.episodes)}"},
        }

    def _stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, stats in self.stats.items():
            r = stats.result()
            out[key] = {k: r[k] for k in ("mean", "std", "min", "max")} | {"count": [stats.count]}
        for key, stats in self.pixels.items():  # LeRobot's image stats: [3, 1, 1] in [0, 1]
            r = stats.result()
            out[key] = {k: [[[v]] for v in r[k]] for k in ("mean", "std", "min", "max")}
            out[key]["count"] = [self.frames]
        return out


class _VideoFile:
    """One camera's frames, every episode back to back, in videos/<key>/chunk-000/file-NNN.mp4."""

    def __init__(self, root: Path, key: str, fps: int):
        self.root, self.key, self.fps = root, key, fps
        self.file_index, self.container, self.stream, self.frames, self.bytes = -1, None, None, 0, 0

    def add(self, images: np.ndarray, limit: int) -> dict[str, Any]:
        """Encode uint8 [T, h, w, 3]; returns the episode's videos/<key>/... columns."""
        import av

        # ">=": a limit of 0 puts every episode in its own file whatever the encoder has emitted
        # yet (its lookahead holds back a different number of frames on 1 core and on 2).
        if self.container is None or self.bytes >= limit:
            self._open(images.shape[1:3])
        start = self.frames / self.fps
        for image in images:
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = self.frames, Fraction(1, self.fps)
            packets = self.stream.encode(frame)
            self.bytes += sum(p.size for p in packets)
            self.container.mux(packets)
            self.frames += 1
        prefix = f"videos/{self.key}/"
        return {
            prefix + "chunk_index": 0,
            prefix + "file_index": self.file_index,
            prefix + "from_timestamp": start,
            prefix + "to_timestamp": self.frames / self.fps,
        }

    def _open(self, shape: tuple[int, int]) -> None:
        import av

        self.close()
        self.file_index += 1
        path = self.root / VIDEO_PATH.format(
            video_key=self.key, chunk_index=0, file_index=self.file_index
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints a banner per file otherwise
        self.container = av.open(str(path), "w")
        self.stream = self.container.add_stream(
            ENCODER["codec"], rate=self.fps, options=ENCODER["options"]
        )
        self.stream.height, self.stream.width = shape
        self.stream.pix_fmt = "yuv420p"
        self.frames, self.bytes = 0, 0

    def close(self) -> None:
        if self.container is not None:
            self.container.mux(self.stream.encode(None))
            self.container.close()
            self.container = None


def _png(image: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()
