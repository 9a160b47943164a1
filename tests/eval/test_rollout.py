"""The rollout protocol and bookkeeping, driven by a fake env (no simulator)."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
from _rollout_fakes import WAIT_STEPS, FakeEnvFactory, FakeTaskEnv, ScriptedPolicy
from _rollout_fakes import ScriptedPolicyFactory as PolicyFactory

from atlas.eval.libero_env import SUITE_MAX_STEPS
from atlas.eval.policies import RandomPolicy, RolloutPolicy
from atlas.eval.rollout import (
    WAIT_ACTION,
    RolloutConfig,
    as_action_chunk,
    run_episode,
    run_rollouts,
)
from atlas.eval.rollout_results import ResultsFile, RolloutSetupError


def _env(successes: set[int] = frozenset(), done_step: int = 5) -> FakeTaskEnv:
    return FakeTaskEnv(0, set(successes), done_step, image_size=8, n_init=50)


def _episode(env, policy, limit=30, replan=8, trial=0, record=False):
    return run_episode(env, policy, env.init_states[trial], 7, limit, replan, record)


def test_protocol_order_and_wait_steps():
    env, policy = _env(), ScriptedPolicy()
    _episode(env, policy, limit=3, trial=4)
    assert env.calls[:3] == [("seed", 7), ("reset",), ("set_init_state", 4)]
    assert policy.resets == 1
    # Exactly 10 no-op actions, and the policy first sees the observation after the 10th.
    for a in env.actions[:WAIT_STEPS]:
        np.testing.assert_array_equal(a, WAIT_ACTION)
    assert policy.seen_steps[0] == WAIT_STEPS
    assert env.actions[WAIT_STEPS][6] == pytest.approx(0.5)  # the policy's, not a wait action


@pytest.mark.parametrize("suite", sorted(SUITE_MAX_STEPS))
def test_step_limit_per_suite(suite, tmp_path):
    config = RolloutConfig(suite=suite, out_dir=tmp_path)
    env = _env()
    out = _episode(env, ScriptedPolicy(), limit=config.step_limit)
    assert not out.success
    assert out.steps == SUITE_MAX_STEPS[suite]
    assert len(env.actions) == WAIT_STEPS + SUITE_MAX_STEPS[suite]


def test_max_steps_override(tmp_path):
    config = RolloutConfig(suite="libero_10", out_dir=tmp_path, max_steps=12)
    assert config.step_limit == 12
    with pytest.raises(ValueError, match="did you mean 'libero_spatial'"):
        RolloutConfig(suite="libero_spacial", out_dir=tmp_path)


@pytest.mark.parametrize("chunk,replan,limit,calls", [(8, 3, 10, 4), (4, 8, 10, 3), (8, 8, 16, 2)])
def test_replan_interval(chunk, replan, limit, calls):
    env, policy = _env(), ScriptedPolicy(chunk_size=chunk)
    out = _episode(env, policy, limit=limit, replan=replan)
    assert out.steps == limit
    executed = min(chunk, replan)  # a chunk shorter than the interval is used up, then replanned
    assert len(policy.seen_steps) == calls
    assert policy.seen_steps == [WAIT_STEPS + k * executed for k in range(calls)]
    acts = np.stack(env.actions[WAIT_STEPS:])
    for k, a in enumerate(acts):
        assert a[0] == pytest.approx((k // executed) / 100)  # which call
        assert a[1] == pytest.approx((k % executed) / 100)  # which row of that call's chunk


def test_success_stops_episode():
    env = _env(successes={0}, done_step=5)
    out = _episode(env, ScriptedPolicy(chunk_size=8), limit=50)
    assert out.success and out.steps == 5
    assert len(env.actions) == WAIT_STEPS + 5


def test_done_during_wait_steps_is_ignored():
    env = _env(successes={0}, done_step=-3)  # the goal "holds" from env step 7
    out = _episode(env, ScriptedPolicy(), limit=20)
    assert out.success and out.steps == 1


def test_actions_are_clipped():
    class Wild:
        def reset(self) -> None: ...

        def predict_action(self, observation):
            return np.array([[5.0, -5.0, 0.3, 1.5, -1.0, 0.0, 9.0]])

    assert isinstance(Wild(), RolloutPolicy)
    env = _env()
    _episode(env, Wild(), limit=3)
    for a in env.actions[WAIT_STEPS:]:
        np.testing.assert_array_equal(a, [1.0, -1.0, 0.3, 1.0, -1.0, 0.0, 1.0])


def test_action_chunk_validation():
    assert as_action_chunk(np.zeros(7)).shape == (1, 7)
    with pytest.raises(ValueError, match=r"\[H, 7\]"):
        as_action_chunk(np.zeros((2, 6)))
    with pytest.raises(ValueError, match="non-finite"):
        as_action_chunk(np.full((1, 7), np.nan))


def test_random_policy():
    a = RandomPolicy(chunk_size=5, seed=1).predict_action({})
    assert a.shape == (5, 7) and a.dtype == np.float32
    assert a.min() >= -1 and a.max() <= 1


def _run(tmp_path, factory, **kw):
    kw = {"suite": "libero_spatial", "out_dir": tmp_path, "trials": 3, "max_steps": 20, **kw}
    return run_rollouts(RolloutConfig(**kw), factory, PolicyFactory(), {"policy": "scripted"})


def test_success_bookkeeping(tmp_path):
    factory = FakeEnvFactory(n_tasks=2, successes={0: {1}, 1: {0, 2}}, done_step=5)
    summary = _run(tmp_path, factory)
    suite = summary["suites"]["libero_spatial"]
    assert (suite["successes"], suite["trials"]) == (3, 6)
    assert suite["success_rate"] == pytest.approx(0.5)
    t0, t1 = suite["tasks"][0], suite["tasks"][1]
    assert (t0["successes"], t0["trials"], t1["successes"]) == (1, 3, 2)
    assert t0["mean_steps"] == pytest.approx((20 + 5 + 20) / 3)
    records = ResultsFile(tmp_path / "results.jsonl").load()
    # (task, trial, success): one row per task, one column per trial
    assert sorted((r.task_id, r.trial, r.success) for r in records) == [
        (0, 0, False), (0, 1, True),  (0, 2, False),
        (1, 0, True),  (1, 1, False), (1, 2, True),
    ]  # fmt: skip
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["suites"]["libero_spatial"]["successes"] == 3


def test_resume_skips_finished_trials(tmp_path):
    first = FakeEnvFactory(n_tasks=2)
    _run(tmp_path, first, trials=2)
    assert first.episodes_run() == 4
    with (tmp_path / "results.jsonl").open("a") as f:
        f.write('{"suite": "libero_spatial", "task_id": 0, "tri')  # a run killed mid-write
    again = FakeEnvFactory(n_tasks=2)
    summary = _run(tmp_path, again, trials=3)
    assert again.episodes_run() == 2  # only trial 2 of each task
    assert summary["suites"]["libero_spatial"]["trials"] == 6
    done = FakeEnvFactory(n_tasks=2)
    _run(tmp_path, done, trials=3)
    assert done.episodes_run() == 0 and done.envs == []  # nothing left: no env is even built


def test_resume_refuses_other_settings(tmp_path):
    _run(tmp_path, FakeEnvFactory(n_tasks=1), trials=1)
    with pytest.raises(RolloutSetupError, match="seed"):
        _run(tmp_path, FakeEnvFactory(n_tasks=1), trials=1, seed=8)


def test_task_subset_and_trial_limit(tmp_path):
    factory = FakeEnvFactory(n_tasks=5, n_init=2)
    summary = _run(tmp_path, factory, tasks=(3,), trials=2)
    assert list(summary["suites"]["libero_spatial"]["tasks"]) == [3]
    with pytest.raises(RolloutSetupError, match="initial states"):
        _run(tmp_path / "b", FakeEnvFactory(n_init=2), trials=3)
    with pytest.raises(RolloutSetupError, match=r"tasks 0..4; got \[5\]"):
        _run(tmp_path / "c", FakeEnvFactory(n_tasks=5), tasks=(1, 5))
    assert not (tmp_path / "c").exists()  # refused before anything was written


def test_parallel_workers_match_inline(tmp_path):
    successes = {0: {0}, 1: {1}}
    inline = _run(tmp_path / "inline", FakeEnvFactory(n_tasks=2, successes=successes), trials=2)
    parallel = _run(
        tmp_path / "par", FakeEnvFactory(n_tasks=2, successes=successes), trials=2, workers=2
    )
    assert parallel == inline


@pytest.mark.skipif(
    importlib.util.find_spec("imageio_ffmpeg") is None,
    reason="needs the sim extra (imageio-ffmpeg)",
)
def test_videos_of_first_trials(tmp_path):
    factory = FakeEnvFactory(n_tasks=1, successes={0: {0}}, image_size=16)
    _run(tmp_path, factory, trials=2, videos=1)
    videos = sorted(p.name for p in (tmp_path / "videos").iterdir())
    assert videos == ["task00_trial000_success.mp4"]
    import imageio.v2 as imageio

    frames = imageio.mimread(tmp_path / "videos" / videos[0])
    assert frames[0].shape == (16, 32, 3)  # agentview | wrist
    assert len(frames) == 1 + WAIT_STEPS + 5
