"""Fixtures for the data tests: tiny LIBERO-layout files whose contents encode their timestep."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from atlas.data.synthetic import generate_synthetic

CAMERAS = ("agentview_rgb", "eye_in_hand_rgb")


def write_demo_file(
    path: Path,
    lengths: list[int],
    size: int = 8,
    cameras: tuple[str, ...] = CAMERAS,
    chunked: bool = False,
) -> Path:
    """A minimal valid LIBERO file where everything encodes (demo d, step t).

    actions[t] = [t, d, 0, 0, 0, 0, -1] / 100 (+ gripper), ee_states[t, 0] = t, gripper = d;
    camera c's frame t is constant t except row 0, which is 200 + c (so flips are visible).
    """
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        data.attrs["problem_info"] = '{"language_instruction": "the problem info wording"}'
        for d, steps in enumerate(lengths):
            grp = data.create_group(f"demo_{d}")
            t = np.arange(steps, dtype=np.float64)
            actions = np.zeros((steps, 7))
            actions[:, 0], actions[:, 1], actions[:, 6] = t / 100, d / 100, -1.0
            grp.create_dataset("actions", data=actions)
            ee = np.zeros((steps, 6))
            ee[:, 0] = t
            grp.create_dataset("obs/ee_states", data=ee)
            grp.create_dataset("obs/gripper_states", data=np.full((steps, 2), float(d)))
            for c, camera in enumerate(cameras):
                frames = np.repeat(np.arange(steps, dtype=np.uint8), size * size * 3)
                frames = frames.reshape(steps, size, size, 3)
                frames[:, 0] = 200 + c
                chunks = (1, size, size, 3) if chunked else None  # chunked: h5py read path
                grp.create_dataset(f"obs/{camera}", data=frames, chunks=chunks)
    return path


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny tensors: thread-pool hand-offs dominate and crawl on a loaded 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def make_file(tmp_path: Path) -> Callable[..., Path]:
    """Factory: make_file(name, lengths, size=8) -> path of a write_demo_file file in tmp_path."""

    def make(name: str = "task_demo.hdf5", lengths: list[int] | None = None, **kw) -> Path:
        return write_demo_file(tmp_path / name, lengths or [5, 3], **kw)

    return make


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic dataset (3 tasks x 4 demos, up to 24 steps, 32 px), made once."""
    out = tmp_path_factory.mktemp("synth") / "atlas_synth"
    return generate_synthetic(out, tasks=3, demos=4, steps=24, image_size=32, seed=0)
