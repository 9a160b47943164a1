"""Observation conversion, instructions and the offline simulator setup (no simulator needed),
plus one smoke rollout in the real LIBERO simulator when it is installed."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from atlas.eval import libero_setup
from atlas.eval.libero_env import (
    instruction_from_task_name,
    quat_to_axis_angle,
    to_policy_observation,
)
from atlas.eval.libero_setup import SimulatorUnavailableError
from atlas.eval.rollout_cli import parse_tasks, rollout_main


def test_instruction_from_task_name():
    name = "pick_up_the_black_bowl_between_the_plate_and_the_ramekin_and_place_it_on_the_plate"
    assert instruction_from_task_name(name + "_demo.hdf5") == name.replace("_", " ")
    assert (
        instruction_from_task_name("KITCHEN_SCENE10_close_the_top_drawer_of_the_cabinet")
        == "close the top drawer of the cabinet"
    )


def test_quat_to_axis_angle():
    np.testing.assert_allclose(quat_to_axis_angle([0, 0, 0, 1]), np.zeros(3))
    s = np.sin(np.pi / 4)
    np.testing.assert_allclose(quat_to_axis_angle([0, 0, s, s]), [0, 0, np.pi / 2], atol=1e-12)
    # Against scipy's rotation vector for quaternions with w >= 0, where the conventions agree.
    Rotation = pytest.importorskip("scipy.spatial.transform").Rotation

    q = np.random.default_rng(0).normal(size=(20, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    q[q[:, 3] < 0] *= -1
    for qi in q:
        np.testing.assert_allclose(
            quat_to_axis_angle(qi), Rotation.from_quat(qi).as_rotvec(), atol=1e-9
        )


def test_to_policy_observation():
    img = np.zeros((4, 6, 3), np.uint8)
    raw = {
        "agentview_image": img,
        "robot0_eye_in_hand_image": img + 1,
        "robot0_eef_pos": np.array([0.1, 0.2, 0.3]),
        "robot0_eef_quat": np.array([0.0, 0.0, 0.0, 1.0]),
        "robot0_gripper_qpos": np.array([0.04, -0.04]),
        "object-state": np.zeros(10),
    }
    obs = to_policy_observation(raw, "do it")
    assert set(obs["images"]) == {"agentview_rgb", "eye_in_hand_rgb"}
    assert obs["images"]["eye_in_hand_rgb"][0, 0, 0] == 1  # same orientation, no flip
    assert obs["instruction"] == "do it"
    assert obs["state"].dtype == np.float32
    np.testing.assert_allclose(obs["state"], [0.1, 0.2, 0.3, 0, 0, 0, 0.04, -0.04], rtol=1e-6)


def test_missing_simulator_names_the_install_line(monkeypatch, caplog):
    monkeypatch.setattr(libero_setup, "_REQUIRED_MODULES", ("numpy", "no_such_simulator_module"))
    with pytest.raises(SimulatorUnavailableError, match=r"atlas-vla\[sim,sim-assets\]"):
        libero_setup.require_simulator()
    assert rollout_main(["--policy", "random", "--suite", "libero_spatial"]) == 2
    assert "pip install 'atlas-vla[sim,sim-assets]'" in caplog.text


def test_find_assets(tmp_path, monkeypatch):
    with pytest.raises(SimulatorUnavailableError, match="lacks"):
        libero_setup.find_assets(tmp_path)
    for d in libero_setup.ASSET_SUBDIRS:
        (tmp_path / d).mkdir()
    assert libero_setup.find_assets(tmp_path) == tmp_path.resolve()
    monkeypatch.setenv(libero_setup.ASSETS_ENV, str(tmp_path))
    assert libero_setup.find_assets() == tmp_path.resolve()


def test_write_libero_config(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    # setenv first so that monkeypatch restores the variable's absence afterwards.
    monkeypatch.setenv("LIBERO_CONFIG_PATH", "")
    monkeypatch.delenv("LIBERO_CONFIG_PATH")
    monkeypatch.setattr(libero_setup, "_package_dir", lambda name: tmp_path / "site" / name)
    folder = libero_setup.write_libero_config(tmp_path / "assets")
    assert folder == tmp_path / "atlas" / "libero"
    assert os.environ["LIBERO_CONFIG_PATH"] == str(folder)
    import yaml

    config = yaml.safe_load((folder / "config.yaml").read_text())
    assert config["assets"] == str(tmp_path / "assets")
    assert config["init_states"] == str(tmp_path / "site" / "libero" / "libero" / "init_files")
    assert set(config) == {"benchmark_root", "bddl_files", "init_states", "datasets", "assets"}


def test_parse_tasks():
    assert parse_tasks("0,3") == (0, 3)
    assert parse_tasks("2-4,0,3") == (2, 3, 4, 0)
    with pytest.raises(Exception, match="bad task list"):
        parse_tasks("a")


@pytest.mark.skipif(
    libero_setup.unavailable_reason() is not None, reason=str(libero_setup.unavailable_reason())
)
def test_smoke_rollout_in_real_simulator(tmp_path):
    """One trial, 20 policy steps, 128 px, random policy: about 30 s on 2 CPU cores."""
    out = tmp_path / "rollout"
    argv = ["--policy", "random", "--suite", "libero_spatial", "--tasks", "0", "--trials", "1"]
    argv += ["--max-steps", "20", "--image-size", "128", "--videos", "1", "--out", str(out)]
    argv += ["--no-progress"]
    assert rollout_main(argv) == 0
    (record,) = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert record["steps"] == 20 and record["success"] is False
    assert record["instruction"].startswith("pick up the black bowl")
    videos = list((out / "videos").glob("task00_trial000_*.mp4"))
    assert len(videos) == 1 and videos[0].stat().st_size > 1000
