"""`atlas data inspect` checks every demo; unreadable files are named by every command.

One table of damaged datasets (each edits demo_1 of an otherwise valid file, so a check of the first
demo alone would pass them), and one of damaged files, run through `inspect`, `stats` and the
training index, with and without `skip_bad_episodes`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest

from atlas.data.cli import main
from atlas.data.errors import DataError
from atlas.data.libero_hdf5 import build_index
from atlas.data.summary import inspect_files

Edit = Callable[[h5py.Group], None]


def _replace(key: str, make: Callable[[h5py.Dataset], np.ndarray]) -> Edit:
    def edit(demo: h5py.Group) -> None:
        value = make(demo[key])
        del demo[key]
        demo.create_dataset(key, data=value)

    return edit


def _delete(key: str) -> Edit:
    def edit(demo: h5py.Group) -> None:
        del demo[key]

    return edit


def _set_action(value: float) -> Edit:
    def edit(demo: h5py.Group) -> None:
        actions = demo["actions"][()]
        actions[3, 2] = value
        demo["actions"][...] = actions

    return edit


def _frames(channels: int = 3, dtype: type = np.uint8, steps: int | None = None) -> Callable:
    def make(old: h5py.Dataset) -> np.ndarray:
        t, h, w, _ = old.shape
        return np.zeros((steps or t, h, w, channels), dtype)

    return make


# (case, edit of data/demo_1 in a file of two 18-step demos, key named, words in the problem)
CASES = [
    ("missing camera", _delete("obs/agentview_rgb"), "obs/agentview_rgb", "missing"),
    ("4-channel images", _replace("obs/agentview_rgb", _frames(4)), "obs/agentview_rgb", "shape"),
    (
        "float32 images",
        _replace("obs/agentview_rgb", _frames(dtype=np.float32)),
        "obs/agentview_rgb",
        "dtype float32",
    ),
    (
        "uint16 images",
        _replace("obs/eye_in_hand_rgb", _frames(dtype=np.uint16)),
        "obs/eye_in_hand_rgb",
        "dtype uint16",
    ),
    (
        "10 images for 18 actions",
        _replace("obs/agentview_rgb", _frames(steps=10)),
        "obs/agentview_rgb",
        "10 steps but actions has 18",
    ),
    (
        "gripper width 1",
        _replace("obs/gripper_states", lambda d: d[:, :1]),
        "obs/gripper_states",
        "shape",
    ),
    ("missing ee_states", _delete("obs/ee_states"), "obs/ee_states", "missing"),
    ("actions width 6", _replace("actions", lambda d: d[:, :6]), "actions", "expected (T, 7)"),
    ("nan action", _set_action(np.nan), "actions", "NaN or inf"),
    ("inf action", _set_action(np.inf), "actions", "the first at step 3"),
    ("action 1e6", _set_action(1e6), "actions", "outside [-1, 1]"),
]


@pytest.fixture
def damaged(make_file) -> Callable[[Edit], Path]:
    def make(edit: Edit) -> Path:
        path = make_file(lengths=[18, 18])
        with h5py.File(path, "r+") as f:
            edit(f["data/demo_1"])
        return path

    return make


@pytest.mark.parametrize(("case", "edit", "key", "words"), CASES, ids=[c[0] for c in CASES])
def test_inspect_exits_1_naming_demo_and_key(case, edit, key, words, damaged, capsys) -> None:
    path = damaged(edit)
    assert main(["inspect", str(path)]) == 1
    out, err = capsys.readouterr()
    assert f"{path}: data/demo_1: {key}: " in err and words in err, err
    assert "Traceback" not in err and "1 problem(s)" in err
    assert "data/demo_0" not in err
    assert str(path) in out  # the summary of what could be read is still printed
    assert main(["inspect", str(path), "--json"]) == 1
    problems = json.loads(capsys.readouterr().out)["problems"]
    assert [(p["file"], p["demo"], p["key"]) for p in problems] == [(str(path), "data/demo_1", key)]
    assert main(["inspect", str(path), "--quick"]) == 0  # the first demo alone is fine


def test_inspect_lists_every_problem_and_passes_a_good_file(make_file, capsys) -> None:
    good = make_file("good_demo.hdf5", lengths=[4, 4])
    bad = make_file("bad_demo.hdf5", lengths=[4, 4, 4])
    with h5py.File(bad, "r+") as f:
        _delete("obs/ee_states")(f["data/demo_0"])
        _set_action(np.nan)(f["data/demo_2"])
        _replace("obs/eye_in_hand_rgb", _frames(4))(f["data/demo_2"])
    assert main(["inspect", str(good)]) == 0
    summary = inspect_files([good, bad])
    found = [(Path(p["file"]).name, p["demo"], p["key"]) for p in summary["problems"]]
    assert found == [
        ("bad_demo.hdf5", "data/demo_0", "obs/ee_states"),
        ("bad_demo.hdf5", "data/demo_2", "obs/eye_in_hand_rgb"),
    ]  # demo_2's NaN is reported once its layout is fixed: values are read from a sound layout
    assert summary["num_files"] == 2 and summary["files"][1]["demos"] == 3


# ------------------------------------------------------------------------ unreadable files


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _damage_header(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[8:48] = bytes(40)  # the superblock after the signature: versions, sizes, addresses
    path.write_bytes(bytes(data))


def _not_hdf5(path: Path) -> None:
    path.write_text("an interrupted download, saved as HTML\n")


FILE_CASES = [
    ("truncated", _truncate, "truncated"),
    ("damaged header", _damage_header, "unreadable HDF5 file"),
    ("not hdf5", _not_hdf5, "not an HDF5 file"),
]


@pytest.mark.parametrize(("case", "damage", "words"), FILE_CASES, ids=[c[0] for c in FILE_CASES])
def test_unreadable_file_is_named_by_every_command_and_skipped(
    case, damage, words, make_file, capsys, caplog
) -> None:
    good = make_file("good_demo.hdf5", lengths=[4, 4])
    bad = make_file("bad_demo.hdf5", lengths=[4, 4])
    damage(bad)
    folder = str(bad.parent)
    assert main(["inspect", folder]) == 1  # inspect: named, the good file still summarized
    out, err = capsys.readouterr()
    assert f"{bad}: " in err and words in err and str(good) in out and "Traceback" not in err
    assert main(["stats", folder]) == 1
    err = capsys.readouterr().err
    assert f"{bad}: " in err and words in err and "Traceback" not in err
    with pytest.raises(DataError, match=words) as info:  # what training and eval build on
        build_index(folder, ["agentview_rgb"])
    assert info.value.file == str(bad)
    with caplog.at_level(logging.WARNING, logger="atlas.data"):
        index = build_index(folder, ["agentview_rgb"], skip_bad_episodes=True)
    assert index.skipped == 1 and {ep.demo for ep in index.episodes} == {"demo_0", "demo_1"}
    assert any(str(bad) in r.getMessage() for r in caplog.records)
    assert main(["stats", folder, "--skip-bad-episodes"]) == 0


def _first_problem(path: Path) -> str:
    problems = inspect_files(path)["problems"]
    return problems[0]["problem"] if problems else "no problem"


def _first_problem_as_nobody(path: Path) -> str:
    """Root reads any file: as root, the check runs in a forked child that drops to `nobody`."""
    if os.geteuid() != 0:
        return _first_problem(path)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.setgid(65534)
            os.setuid(65534)
            message = _first_problem(path)
        except BaseException as e:  # sent to the parent, whose assertion then fails
            message = f"raised {type(e).__name__}: {e}"
        os.write(write, message.encode()[:4000])
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    return os.read(read, 4096).decode()


def test_permission_denied_is_named(make_file) -> None:
    folder = Path(tempfile.mkdtemp())  # pytest's own folders are closed to other users
    try:
        folder.chmod(0o755)
        path = Path(shutil.move(make_file("locked_demo.hdf5", lengths=[4]), folder))
        path.chmod(0)
        assert _first_problem_as_nobody(path) == "permission denied (make the file readable)"
        folder.chmod(0o700)  # now the folder on the way is closed too
        assert "permission denied" in _first_problem_as_nobody(path)
    finally:
        folder.chmod(0o755)
        shutil.rmtree(folder)


def test_stats_and_training_warn_about_actions_outside_the_range(make_file, caplog) -> None:
    path = make_file(lengths=[5, 5, 5])
    with h5py.File(path, "r+") as f:
        _set_action(1e6)(f["data/demo_1"])
        _set_action(-3.0)(f["data/demo_2"])
    with caplog.at_level(logging.WARNING, logger="atlas.data"):
        index = build_index(path, ["agentview_rgb"])
    assert len(index.episodes) == 3  # a warning, not a refusal: some datasets are rescaled later
    [warning] = [r.getMessage() for r in caplog.records]
    assert str(path) in warning and "2 of 3 demos" in warning and "data/demo_1" in warning
    assert "1e+06 at step 3" in warning
