"""The synthetic world as a closed-loop env: it agrees with the recorder, and runs the rollout."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from atlas.data import synthetic_scene as world
from atlas.data.synthetic import DATA_SEED, generate_synthetic, synthetic_tasks
from atlas.eval.rollout import RolloutConfig, run_rollouts
from atlas.eval.rollout_cli import rollout_main
from atlas.eval.synthetic_env import (
    SyntheticEnvFactory,
    SyntheticTaskEnv,
    encode_scene,
    held_out_layouts,
    task_layout,
)

SIZE = 32
HAS_IMAGEIO = importlib.util.find_spec("imageio") is not None


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "atlas_synth"
    return generate_synthetic(out, tasks=2, demos=3, steps=40, image_size=SIZE)


def _demo_scene(task_id: int, demo: int) -> world.Scene:
    """The layout demo `demo` of task `task_id` was recorded in (the generator's streams)."""
    _, base = task_layout(task_id)
    return world.jitter_scene(base, np.random.default_rng([DATA_SEED, task_id, demo]))


@pytest.mark.parametrize(("task_id", "demo"), [(0, 0), (1, 2)])
def test_env_replays_a_recorded_demo_to_success(dataset: Path, task_id: int, demo: int) -> None:
    name = synthetic_tasks(2)[task_id]["name"]
    with h5py.File(dataset / f"{name}_demo.hdf5", "r") as f:
        grp = f[f"data/demo_{demo}"]
        actions, agent = grp["actions"][()], grp["obs/agentview_rgb"][()]
        wrist = grp["obs/eye_in_hand_rgb"][()]
        state = np.concatenate([grp["obs/ee_states"][()], grp["obs/gripper_states"][()]], 1)
    env = SyntheticTaskEnv(task_id, SIZE)
    obs = env.set_init_state(encode_scene(_demo_scene(task_id, demo)))
    done_at = None
    for t, action in enumerate(actions):
        # What the env shows before step t is what the recorder stored at step t.
        np.testing.assert_array_equal(obs["images"]["agentview_rgb"], agent[t])
        np.testing.assert_array_equal(obs["images"]["eye_in_hand_rgb"], wrist[t])
        np.testing.assert_allclose(obs["state"], state[t], atol=1e-6)
        obs, done = env.step(action)
        if done and done_at is None:
            done_at = t
    assert done_at is not None, "the recorded actions did not place the block"
    # After the release the expert only rises and holds still: done at most 4 steps before the end.
    assert len(actions) - done_at <= 2 + world.HOLD_STEPS + 1


def test_a_grasp_needs_the_fingers_around_the_block() -> None:
    _, scene = task_layout(0)
    state = world.initial_state(scene)
    close = np.array([0, 0, 0, 0, 0, 0, 1.0])
    away = world.WorldState(state.block + [0.1, 0.0, 0.02], 0.0, state.block.copy(), False)
    for _ in range(2):
        away = world.apply_action(away, close)
    assert away.grip == 1.0 and not away.holding  # closed beside the block: nothing in hand
    over = world.WorldState(state.block + [0.01, 0.0, 0.02], 0.0, state.block.copy(), False)
    for _ in range(2):
        over = world.apply_action(over, close)
    assert over.holding
    lifted = world.apply_action(over, np.array([0, 0, 1.0, 0, 0, 0, 1.0]))
    assert lifted.block[2] > 0.05  # the block moves with the gripper
    dropped = world.apply_action(lifted, np.array([0, 0, 0, 0, 0, 0, -1.0]))
    assert not dropped.holding and dropped.block[2] == 0.0
    assert not world.task_done(scene, dropped)  # dropped beside the receptacle


def test_held_out_layouts_are_not_dataset_layouts() -> None:
    for task_id in range(2):
        train = {tuple(encode_scene(_demo_scene(task_id, d)).round(9)) for d in range(200)}
        for seed in (0, 7):
            rollout = {tuple(v.round(9)) for v in held_out_layouts(task_id, seed)}
            assert len(rollout) == 50 and not rollout & train
        assert not np.array_equal(held_out_layouts(task_id, 0), held_out_layouts(task_id, 1))


def test_expert_succeeds_and_mean_action_fails_in_closed_loop(tmp_path: Path) -> None:
    from atlas.eval.policies import MeanActionPolicy, PolicySpec

    factory = SyntheticEnvFactory(num_tasks_=2, image_size=SIZE, seed=3)
    config = RolloutConfig(suite="synthetic", out_dir=tmp_path / "expert", trials=5)
    summary = run_rollouts(config, factory, PolicySpec("expert"))["suites"]["synthetic"]
    assert summary["success_rate"] == 1.0 and summary["trials"] == 10
    assert summary["mean_steps"] < 25
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    mean = [0.08, -0.02, 0.0, 0.0, 0.0, 0.0, -0.05]
    (ckpt / "normalization.json").write_text(json.dumps({"stats": {"action": {"mean": mean}}}))
    config = RolloutConfig(suite="synthetic", out_dir=tmp_path / "mean", trials=5)
    summary = run_rollouts(config, factory, lambda: MeanActionPolicy(ckpt))
    assert summary["suites"]["synthetic"]["success_rate"] == 0.0


def _fake_checkpoint(root: Path, cameras: list[str], width: int = 7, tasks: int = 2) -> Path:
    """The two files `atlas rollout` reads before loading a policy (config + normalization)."""
    root.mkdir(parents=True)
    data = {"cameras": cameras, "synthetic": {"tasks": tasks, "image_size": SIZE}}
    (root / "config.json").write_text(json.dumps({"data": data}))
    stats = {"action": {"mean": [0.0] * (width - 1) + [-0.1]}}
    (root / "normalization.json").write_text(json.dumps({"mode": "q99", "stats": stats}))
    return root


@pytest.mark.skipif(not HAS_IMAGEIO, reason="videos need imageio (the sim extra)")
def test_cli_writes_results_table_and_videos(tmp_path: Path, capsys) -> None:
    ckpt = _fake_checkpoint(tmp_path / "ckpt", ["agentview_rgb"])
    out = tmp_path / "out"
    argv = ["--suite", "synthetic", "--checkpoint", str(ckpt), "--policy", "mean-action"]
    argv += ["--trials", "2", "--videos", "1", "--out", str(out), "--compare", "expert"]
    assert rollout_main([*argv, "--no-progress", "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    assert str(out / "results.json") in printed
    assert "mean-action     0/4" in printed and "expert          4/4" in printed
    for folder in (out, tmp_path / "out-expert"):
        assert len((folder / "results.jsonl").read_text().splitlines()) == 4
        summary = json.loads((folder / "results.json").read_text())
        assert set(summary["suites"]["synthetic"]["tasks"]) == {"0", "1"}
        assert len(list((folder / "videos").glob("task0*_trial000_*.mp4"))) == 2


@pytest.mark.parametrize(
    ("argv", "cameras", "width", "message"),
    [
        (["--tasks", "5"], "agentview_rgb", 7, "--tasks: synthetic has tasks 0..1"),
        ([], "front_rgb", 7, "config.json: the policy was trained on cameras ['front_rgb']"),
        ([], "agentview_rgb", 6, "normalization.json: the policy's actions have 6 values"),
        (["--suite", "synthetc"], "agentview_rgb", 7, "did you mean 'synthetic'"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, caplog, argv: list[str], cameras: str, width: int, message: str
) -> None:
    ckpt = _fake_checkpoint(tmp_path / "ckpt", [cameras], width)
    base = ["--suite", "synthetic", "--checkpoint", str(ckpt), "--policy", "mean-action"]
    code = rollout_main([*base, *argv, "--trials", "1", "--out", str(tmp_path / "o")])
    assert code == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and message in errors[0], errors
    assert not (tmp_path / "o" / "results.jsonl").exists()
