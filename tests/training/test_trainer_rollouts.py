"""In-training rollouts (eval.rollout_interval): the real trainer and policy, a fake env."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from atlas.config import AtlasConfig
from atlas.training import trainer as trainer_module
from atlas.training.rollouts import TrainingRollouts
from atlas.training.trainer import run_training

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "eval"))
from _rollout_fakes import FakeEnvFactory  # noqa: E402


def test_success_rate_is_logged_every_rollout_interval(
    tiny_cfg: Callable[..., AtlasConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tiny_cfg(
        "eval.rollout_interval=3",
        "eval.rollout_tasks=[0, 1]",
        "eval.rollout_trials=2",
        "eval.replan_interval=4",
    )
    # Task 0 trial 0 succeeds three policy steps in; the other three trials run to the limit.
    fake = FakeEnvFactory(n_tasks=3, successes={0: {0}}, done_step=3, image_size=32)
    injected = functools.partial(TrainingRollouts, env_factory=fake)
    monkeypatch.setattr(trainer_module, "TrainingRollouts", injected)
    run_training(cfg, progress=False)

    run = Path(cfg.checkpoint.save_dir)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    rollouts = [r for r in records if r.get("split") == "rollout"]
    assert [r["step"] for r in rollouts] == [3, 6]
    for r in rollouts:
        assert r["rollout_success_rate"] == 0.25 and r["rollout_trials"] == 4
    assert fake.episodes_run() == 8  # 2 rollouts x 2 tasks x 2 trials
    assert (run / "rollouts" / "step_00000003" / "results.jsonl").is_file()


def test_disabled_by_default_needs_no_simulator(tiny_cfg: Callable[..., AtlasConfig]) -> None:
    rollouts = TrainingRollouts(tiny_cfg(), dist=trainer_module.DistInfo())
    assert not rollouts.due(3) and rollouts.env_factory is None
