"""The synthetic files match LIBERO's layout (docs/LIBERO.md §1) key by key and behave like data."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from atlas.data.libero_hdf5 import build_index, instruction_from_filename, noop_mask
from atlas.data.synthetic import STATE_DIM, generate_synthetic

# dataset -> (trailing shape, dtype); T is the demo's length. docs/LIBERO.md §1.
DEMO_DATASETS = {
    "actions": ((7,), np.float64),
    "states": ((STATE_DIM,), np.float64),
    "robot_states": ((9,), np.float64),
    "rewards": ((), np.uint8),
    "dones": ((), np.uint8),
    "obs/agentview_rgb": ((32, 32, 3), np.uint8),
    "obs/eye_in_hand_rgb": ((32, 32, 3), np.uint8),
    "obs/gripper_states": ((2,), np.float64),
    "obs/joint_states": ((7,), np.float64),
    "obs/ee_states": ((6,), np.float64),
    "obs/ee_pos": ((3,), np.float64),
    "obs/ee_ori": ((3,), np.float64),
}
DATA_ATTRS = {
    "env_name",
    "problem_info",
    "macros_image_convention",
    "bddl_file_name",
    "bddl_file_content",
    "env_args",
    "num_demos",
    "total",
    "tag",
}


def test_file_names_and_group_layout(synth_dir: Path) -> None:
    files = sorted(synth_dir.glob("*.hdf5"))
    assert len(files) == 3
    for path in files:
        assert path.name.endswith("_demo.hdf5")
        with h5py.File(path, "r") as f:
            assert set(f.keys()) == {"data"}
            assert set(f["data"].keys()) == {f"demo_{i}" for i in range(4)}


def test_every_dataset_and_attribute_matches_the_format(synth_dir: Path) -> None:
    with h5py.File(next(synth_dir.glob("*.hdf5")), "r") as f:
        data = f["data"]
        assert DATA_ATTRS <= set(data.attrs)
        info = json.loads(data.attrs["problem_info"])
        assert {"problem_name", "domain_name", "language_instruction"} <= set(info)
        env_args = json.loads(data.attrs["env_args"])
        kwargs = env_args["env_kwargs"]
        assert kwargs["control_freq"] == 20 and kwargs["camera_heights"] == 32
        assert kwargs["camera_names"] == ["robot0_eye_in_hand", "agentview"]
        assert data.attrs["macros_image_convention"] == "opengl"
        assert data.attrs["tag"] == "libero-v1" and data.attrs["num_demos"] == 4
        total = 0
        for name, demo in data.items():
            steps = int(demo.attrs["num_samples"])
            total += steps
            assert isinstance(demo.attrs["model_file"], str)
            assert demo.attrs["init_state"].dtype == np.float64
            assert demo.attrs["init_state"].shape == (STATE_DIM,)
            assert set(demo["obs"].keys()) == {k[4:] for k in DEMO_DATASETS if k[:4] == "obs/"}
            for key, (trailing, dtype) in DEMO_DATASETS.items():
                assert demo[key].shape == (steps, *trailing), (name, key)
                assert demo[key].dtype == dtype, (name, key)
            done = demo["dones"][()]
            assert done[-1] == 1 and done[:-1].sum() == 0
            np.testing.assert_array_equal(demo["rewards"][()], done)
            ee = demo["obs/ee_states"][()]
            np.testing.assert_array_equal(demo["obs/ee_pos"][()], ee[:, :3])
            assert np.abs(demo["actions"][()]).max() <= 1.0
        assert data.attrs["total"] == total


def test_instruction_wordings_and_noop_tail(synth_dir: Path) -> None:
    path = next(synth_dir.glob("*.hdf5"))
    with h5py.File(path, "r") as f:
        wording = json.loads(f["data"].attrs["problem_info"])["language_instruction"]
        actions = f["data/demo_0/actions"][()]
    assert instruction_from_filename(path).startswith("pick up the ")
    assert wording != instruction_from_filename(path)  # differs, like most real tasks
    assert noop_mask(actions)[-2:].all()  # the demo ends holding still


def test_images_are_stored_upside_down(synth_dir: Path) -> None:
    """The arm starts high at the table centre, y up: its ring is mirrored by the stored rows."""
    with h5py.File(next(synth_dir.glob("*.hdf5")), "r") as f:
        stored = f["data/demo_0/obs/agentview_rgb"][0]
        y = f["data/demo_0/obs/ee_states"][0, 1]
    dark = np.argwhere((stored < 60).all(axis=-1))  # the open gripper's dark ring
    row_stored = dark[:, 0].mean() + 0.5
    row_upright = (0.25 - y) / 0.5 * 32  # where the upright image draws it
    assert abs((32 - row_stored) - row_upright) < 1.5


def test_generation_is_atomic_and_deterministic(tmp_path: Path) -> None:
    a = generate_synthetic(tmp_path / "a", tasks=2, demos=2, steps=12, image_size=16, seed=3)
    b = generate_synthetic(tmp_path / "b", tasks=2, demos=2, steps=12, image_size=16, seed=3)
    for fa, fb in zip(sorted(a.glob("*.hdf5")), sorted(b.glob("*.hdf5"))):
        with h5py.File(fa, "r") as x, h5py.File(fb, "r") as y:
            np.testing.assert_array_equal(
                x["data/demo_1/actions"][()], y["data/demo_1/actions"][()]
            )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]  # no temporary left over
    with pytest.raises(FileExistsError):
        generate_synthetic(a, tasks=1, demos=1, steps=4, image_size=16)


def test_actions_depend_on_the_scene(synth_dir: Path) -> None:
    """Learnable, not constant: the first reach actions point from the arm to the named block."""
    index = build_index(synth_dir, ["agentview_rgb"])
    first = np.stack([ep.actions[0, :2] for ep in index.episodes])
    assert first.std(axis=0).min() > 0.1
    assert {round(float(a), 1) for ep in index.episodes for a in ep.actions[:, 6]} == {-1.0, 1.0}


def test_an_existing_folder_of_another_size_is_refused(synth_dir: Path) -> None:
    """The demo's folder from an earlier, smaller debug.yaml must not be trained on silently."""
    from atlas.config.schema import SyntheticConfig
    from atlas.data.build import ensure_synthetic
    from atlas.data.errors import DataError
    from atlas.data.synthetic import synthetic_size

    assert synthetic_size(synth_dir) == (3, 4, 32)
    ensure_synthetic(synth_dir, SyntheticConfig(tasks=3, demos=4, steps=24, image_size=32))
    with pytest.raises(DataError, match=r"3 tasks x 4 demos at 32 px.*asks for 3 x 48"):
        ensure_synthetic(synth_dir, SyntheticConfig(tasks=3, demos=48, steps=24, image_size=32))
