"""Test helpers for LeRobotDataset folders: the fixtures written by `lerobot`, and a v2.1 layout.

`write_v21` lays a v3.0 folder out again as the older v2.1 release does (LeRobot's
`convert_dataset_v21_to_v30` in reverse): meta/tasks.jsonl, meta/episodes.jsonl, one parquet per
episode under data/chunk-000/episode_NNNNNN.parquet and one mp4 per episode and camera under
videos/chunk-000/<key>/episode_NNNNNN.mp4, each starting at time 0 (frames re-encoded in AV1).
"""

from __future__ import annotations

import json
import shutil
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from atlas.data.lerobot import build_lerobot_index
from atlas.data.lerobot_frames import LeRobotFrameReader

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "lerobot"
CAMERAS = ["observation.images.image", "observation.images.wrist_image"]
V21_DATA = "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
V21_VIDEO = "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"


def written() -> dict[str, np.ndarray]:
    """What scripts/make_lerobot_fixture.py gave `add_frame`: images_E [T, 2, h, w, 3], ..."""
    with np.load(FIXTURES / "written.npz") as f:
        return {k: f[k] for k in f.files}


def write_v21(v30: Path, out: Path) -> Path:
    """The v3.0 folder `v30` as a v2.1 folder `out` (see the module doc)."""
    info = json.loads((v30 / "meta" / "info.json").read_text())
    index = build_lerobot_index(v30, CAMERAS)
    data = pq.read_table(v30 / "data" / "chunk-000" / "file-000.parquet")
    tasks = pq.read_table(v30 / "meta" / "tasks.parquet").to_pydict()
    (out / "meta").mkdir(parents=True)
    lines = [
        json.dumps({"task_index": i, "task": t}) for i, t in zip(tasks["task_index"], tasks["task"])
    ]
    (out / "meta" / "tasks.jsonl").write_text("\n".join(lines) + "\n")
    episodes = []
    reader = LeRobotFrameReader(index.sources, index.fps)
    for e, ep in enumerate(index.episodes):
        rows = data.filter(pc.equal(data["episode_index"], e))
        path = out / V21_DATA.format(episode_chunk=0, episode_index=e)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(rows, path)
        episodes.append(
            {"episode_index": e, "tasks": [index.tasks[ep.task]], "length": len(ep.steps)}
        )
        for key in CAMERAS:
            if info["features"][key]["dtype"] == "video":
                frames = np.empty((len(ep.steps), *ep.frame_shapes[key]), np.uint8)
                for t in range(len(ep.steps)):
                    reader.read_into(ep.file, ep.demo, key, t, frames[t])
                video = out / V21_VIDEO.format(episode_chunk=0, episode_index=e, video_key=key)
                _encode(video, frames, int(info["fps"]))
    (out / "meta" / "episodes.jsonl").write_text("\n".join(json.dumps(r) for r in episodes) + "\n")
    info |= {"codebase_version": "v2.1", "data_path": V21_DATA, "video_path": V21_VIDEO}
    (out / "meta" / "info.json").write_text(json.dumps(info, indent=4))
    return out


def _encode(path: Path, frames: np.ndarray, fps: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libsvtav1", rate=fps, options={"g": "2", "crf": "20"})
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        for t, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = t, Fraction(1, fps)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def copy_fixture(name: str, dst: Path) -> Path:
    """A writable copy of tests/fixtures/lerobot/<name> (for tests that damage it)."""
    return Path(shutil.copytree(FIXTURES / name, dst / name))
