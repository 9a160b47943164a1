"""MP4 videos of rollouts: agentview and wrist camera side by side.

Uses imageio with the ffmpeg binary that the `imageio-ffmpeg` wheel ships (no system ffmpeg).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

VIDEO_FPS = 20  # LIBERO's control frequency, so videos play in real time
VIDEO_CAMERAS = ("agentview_rgb", "eye_in_hand_rgb")


def side_by_side(observation: dict[str, Any]) -> np.ndarray:
    """Policy observation -> one uint8 frame [h, 2w, 3] for viewing.

    The cameras are stored in OpenGL row order (upside down); a vertical flip gives the image the
    camera really saw, so videos are shown that way. Missing cameras are left out.
    """
    images = [observation["images"][c][::-1] for c in VIDEO_CAMERAS if c in observation["images"]]
    return np.concatenate(images, axis=1)


def write_video(path: str | Path, frames: Sequence[np.ndarray], fps: int = VIDEO_FPS) -> Path:
    """Write uint8 frames [h, w, 3] as an H.264 MP4 and return the path.

    Frames are padded to even sides, which yuv420p (the pixel format players accept) needs.
    """
    try:
        import imageio.v2 as imageio
    except ImportError as e:
        raise RuntimeError("videos need imageio: pip install 'atlas-vla[sim]'") from e
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames[0].shape[:2]
    pad = ((0, h % 2), (0, w % 2), (0, 0))
    with imageio.get_writer(
        path, fps=fps, codec="libx264", pixelformat="yuv420p", macro_block_size=1, quality=8
    ) as writer:
        for frame in frames:
            writer.append_data(np.pad(frame, pad))
    return path
