"""Write the tiny LeRobotDataset fixtures of tests/fixtures/lerobot with the `lerobot` package.

    python3.12 -m venv /tmp/lerobot && /tmp/lerobot/bin/pip install 'lerobot[dataset]==0.6.1'
    /tmp/lerobot/bin/python scripts/make_lerobot_fixture.py tests/fixtures/lerobot

It needs Python >= 3.12 and torch < 2.12, hence a virtualenv of its own beside AtlasVLA's. Writes
`v30_video/` (AV1 videos, LeRobot's default encoder), `v30_image/` (PNG images in the parquet)
`written.npz`: the exact frames, states and actions given to `add_frame`, which the tests
compare with what AtlasVLA reads back, and `lerobot_decoded.npz`: the video frames as LeRobot's
own reader decodes them. The content is deterministic and smooth (a bright square
whose position encodes the frame), so AV1 keeps it within a few grey levels.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np

SIZE = 64  # SVT-AV1's smallest comfortable frame side
LENGTHS = (12, 9)
TASKS = ("put the bowl on the plate", "open the top drawer")
CAMERAS = ("observation.images.image", "observation.images.wrist_image")


def frame(episode: int, t: int, camera: int) -> np.ndarray:
    """uint8 [SIZE, SIZE, 3]: a gradient background and a square at a position set by t."""
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    image = np.stack([x * 2, y * 2, np.full_like(x, 60 + 80 * camera)], axis=-1)
    top, left = 4 + 3 * t, 8 + 12 * episode
    image[top : top + 12, left : left + 12] = (240, 240, 40 + 100 * camera)
    return image.astype(np.uint8)


def episode_arrays(episode: int, length: int) -> dict[str, np.ndarray]:
    t = np.arange(length, dtype=np.float32)[:, None]
    state = np.concatenate(
        [t / 10 + episode, np.tile(np.arange(7, dtype=np.float32), (length, 1))], 1
    )
    action = np.concatenate([np.sin(t + np.arange(6)), np.where(t % 4 < 2, -1.0, 1.0)], 1)
    images = np.stack([[frame(episode, i, c) for c in range(2)] for i in range(length)])
    return {
        "state": state.astype(np.float32),
        "action": action.astype(np.float32),
        "images": images,
    }


def features(use_videos: bool) -> dict:
    kind = "video" if use_videos else "image"
    cams = {
        k: {"dtype": kind, "shape": (SIZE, SIZE, 3), "names": ["height", "width", "channel"]}
        for k in CAMERAS
    }
    return {
        **cams,
        "observation.state": {"dtype": "float32", "shape": (8,), "names": ["state"]},
        "action": {"dtype": "float32", "shape": (7,), "names": ["actions"]},
    }


def write(root: Path, use_videos: bool) -> None:
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    if root.exists():
        shutil.rmtree(root)
    ds = LeRobotDataset.create(
        "atlas/fixture",
        fps=10,
        features=features(use_videos),
        root=root,
        robot_type="panda",
        use_videos=use_videos,
    )
    for e, length in enumerate(LENGTHS):
        arrays = episode_arrays(e, length)
        for t in range(length):
            ds.add_frame(
                {
                    CAMERAS[0]: arrays["images"][t, 0],
                    CAMERAS[1]: arrays["images"][t, 1],
                    "observation.state": arrays["state"][t],
                    "action": arrays["action"][t],
                    "task": TASKS[e],
                }
            )
        ds.save_episode()
    ds.finalize()
    for path in root.rglob("*"):  # lerobot leaves some files readable by their owner only
        path.chmod(0o755 if path.is_dir() else 0o644)


def dump_decoded(root: Path, out: Path) -> None:
    """What LeRobot's own reader decodes for the agent-view camera of episode 1, which starts
    mid-file (from_timestamp 1.2 s): uint8 [9, h, w, 3]."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    ds = LeRobotDataset("atlas/fixture", root=root, video_backend="pyav")
    rows = range(LENGTHS[0], LENGTHS[0] + LENGTHS[1])
    frames = [ds[i][CAMERAS[0]].numpy().transpose(1, 2, 0) * 255 for i in rows]
    np.savez_compressed(out, frames=np.array(frames).round().astype(np.uint8))


def main(out: str) -> None:
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    write(out_dir / "v30_video", use_videos=True)
    write(out_dir / "v30_image", use_videos=False)
    arrays = {f"{k}_{e}": v for e, n in enumerate(LENGTHS) for k, v in episode_arrays(e, n).items()}
    np.savez_compressed(out_dir / "written.npz", tasks=np.array(TASKS), **arrays)
    dump_decoded(out_dir / "v30_video", out_dir / "lerobot_decoded.npz")


if __name__ == "__main__":
    main(sys.argv[1])
