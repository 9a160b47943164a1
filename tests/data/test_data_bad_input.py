"""Every kind of bad input is a DataError naming the file, demo and key, raised at build time."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest

from atlas.data.errors import DataError
from atlas.data.libero_hdf5 import build_index

CAMERAS = ["agentview_rgb", "eye_in_hand_rgb"]


def _replace(key: str, value: np.ndarray) -> Callable[[h5py.Group], None]:
    def edit(demo: h5py.Group) -> None:
        del demo[key]
        demo.create_dataset(key, data=value)

    return edit


def _delete(key: str) -> Callable[[h5py.Group], None]:
    def edit(demo: h5py.Group) -> None:
        del demo[key]

    return edit


def _nan_actions(value: float) -> Callable[[h5py.Group], None]:
    def edit(demo: h5py.Group) -> None:
        actions = demo["actions"][()]
        actions[2, 3] = value
        demo["actions"][...] = actions

    return edit


def _empty(demo: h5py.Group) -> None:
    for key in ("actions", "obs/ee_states", "obs/gripper_states", *(f"obs/{c}" for c in CAMERAS)):
        _replace(key, np.zeros((0, *demo[key].shape[1:]), demo[key].dtype))(demo)


# (case, edit of data/demo_1 in a file of two 5-step demos, key named, words in the message)
CASES = [
    ("missing key", _delete("obs/ee_states"), "obs/ee_states", "missing"),
    ("missing camera", _delete("obs/eye_in_hand_rgb"), "obs/eye_in_hand_rgb", "missing"),
    ("actions shape", _replace("actions", np.zeros((5, 6))), "actions", "shape"),
    (
        "image rank",
        _replace("obs/agentview_rgb", np.zeros((5, 8, 8), np.uint8)),
        "obs/agentview_rgb",
        "shape",
    ),
    (
        "image dtype",
        _replace("obs/agentview_rgb", np.zeros((5, 8, 8, 3), np.float32)),
        "obs/agentview_rgb",
        "dtype",
    ),
    ("actions dtype", _replace("actions", np.zeros((5, 7), np.int64)), "actions", "dtype"),
    (
        "length mismatch",
        _replace("obs/gripper_states", np.zeros((4, 2))),
        "obs/gripper_states",
        "steps",
    ),
    ("nan action", _nan_actions(np.nan), "actions", "NaN"),
    ("inf action", _nan_actions(np.inf), "actions", "inf"),
    ("empty demo", _empty, "actions", "empty"),
]


@pytest.mark.parametrize(("case", "edit", "key", "words"), CASES, ids=[c[0] for c in CASES])
def test_bad_demo_names_file_demo_and_key(make_file, case, edit, key, words) -> None:
    path = make_file(lengths=[5, 5])
    with h5py.File(path, "r+") as f:
        edit(f["data/demo_1"])
    with pytest.raises(DataError, match=words) as info:
        build_index(path, CAMERAS)
    err = info.value
    assert (err.file, err.demo, err.key) == (str(path), "data/demo_1", key)
    assert str(path) in str(err) and "data/demo_1" in str(err) and key in str(err)


def test_skip_bad_episodes_warns_and_counts(make_file, caplog) -> None:
    path = make_file(lengths=[5, 5, 5])
    with h5py.File(path, "r+") as f:
        _nan_actions(np.nan)(f["data/demo_0"])
        _delete("obs/ee_states")(f["data/demo_2"])
    with caplog.at_level(logging.WARNING, logger="atlas.data"):
        index = build_index(path, CAMERAS, skip_bad_episodes=True)
    assert [ep.demo for ep in index.episodes] == ["demo_1"] and index.skipped == 2
    warnings = [r.getMessage() for r in caplog.records]
    assert sum("demo_0" in w for w in warnings) == 1 and sum("demo_2" in w for w in warnings) == 1
    assert any("skipped 2" in w for w in warnings)


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found") as info:
        build_index(tmp_path / "nowhere", CAMERAS)
    assert info.value.file == str(tmp_path / "nowhere")
    with pytest.raises(DataError, match="glob matches no file"):
        build_index(str(tmp_path / "*.hdf5"), CAMERAS)
    with pytest.raises(DataError, match="no .hdf5 files"):
        build_index(tmp_path, CAMERAS)


def test_file_that_is_not_hdf5(tmp_path: Path, make_file) -> None:
    bad = tmp_path / "broken_demo.hdf5"
    bad.write_text("not an HDF5 file")
    with pytest.raises(DataError, match="not an HDF5 file") as info:
        build_index(bad, CAMERAS)
    assert info.value.file == str(bad)
    good = make_file("good_demo.hdf5")
    index = build_index([bad, good], CAMERAS, skip_bad_episodes=True)
    assert index.skipped == 1 and len(index.episodes) == 2


def test_file_without_data_group_or_demos(tmp_path: Path) -> None:
    path = tmp_path / "empty_demo.hdf5"
    with h5py.File(path, "w") as f:
        f.create_group("other")
    with pytest.raises(DataError, match="missing group") as info:
        build_index(path, CAMERAS)
    assert info.value.key == "data"
    with h5py.File(path, "a") as f:
        f.create_group("data")
    with pytest.raises(DataError, match="no demo groups"):
        build_index(path, CAMERAS)


def test_missing_problem_info_when_selected(make_file) -> None:
    path = make_file()
    with h5py.File(path, "r+") as f:
        del f["data"].attrs["problem_info"]
    with pytest.raises(DataError, match="problem_info"):
        build_index(path, CAMERAS, instruction_source="problem_info")
