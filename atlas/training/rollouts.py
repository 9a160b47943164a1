"""Closed-loop LIBERO rollouts during training (`eval.rollout_interval` > 0).

Every `rollout_interval` optimizer steps rank 0 runs `eval.rollout_trials` trials of each task in
`eval.rollout_tasks` of `eval.rollout_suite` with the policy being trained (in eval mode, the
protocol of `atlas rollout`: seed 7, initial states in order, 10 wait steps), writes the episodes
to `<save_dir>/rollouts/step_<N>/` and the success rate to metrics.jsonl, TensorBoard and W&B
(`rollout/success_rate`). The other ranks wait at a barrier, so keep the trial count small: the
wait counts against `training.dist_timeout_minutes`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from atlas.config.schema import AtlasConfig
from atlas.distributed.env import DistInfo, barrier, broadcast_object
from atlas.eval.libero_env import LiberoEnvFactory
from atlas.eval.libero_setup import require_simulator
from atlas.eval.rollout import RolloutConfig, run_rollouts

log = logging.getLogger(__name__)

ROLLOUT_IMAGE_SIZE = 128  # the camera resolution of LIBERO's demonstrations


class TrainingRollouts:
    """Runs the in-training rollouts; a no-op when `eval.rollout_interval` is 0."""

    def __init__(self, cfg: AtlasConfig, dist: DistInfo, env_factory: Any = None) -> None:
        """`env_factory`: the LIBERO simulator by default; tests inject a fake one."""
        self.cfg, self.dist, self.env_factory = cfg, dist, env_factory
        self.interval = cfg.eval.rollout_interval
        if self.interval > 0 and env_factory is None:
            require_simulator()  # at start-up, not hours into the run
            source = cfg.data.instruction_source
            self.env_factory = LiberoEnvFactory(ROLLOUT_IMAGE_SIZE, source, None)

    def due(self, step: int) -> bool:
        return self.interval > 0 and step % self.interval == 0

    def run(self, step: int, policy: nn.Module, gathered: Any) -> dict[str, Any] | None:
        """Roll out on rank 0 (every rank calls this); returns the suite summary on all ranks.

        `gathered` is the strategy's context for forward passes on one rank only (FSDP2 gathers
        its shards once); every rank enters it, so the collective inside matches.
        """
        summary = None
        with gathered, torch.random.fork_rng(devices=[]):  # leave the training RNG untouched
            if self.dist.is_main:
                summary = self._rollout(step, policy)
            barrier()
        return broadcast_object(summary)

    def _rollout(self, step: int, policy: nn.Module) -> dict[str, Any]:
        e = self.cfg.eval
        config = RolloutConfig(
            suite=e.rollout_suite,
            out_dir=Path(self.cfg.checkpoint.save_dir) / "rollouts" / f"step_{step:08d}",
            tasks=tuple(e.rollout_tasks),
            trials=e.rollout_trials,
            replan_interval=e.replan_interval,
            videos=0,
            workers=1,
            progress=False,
        )
        was_training = policy.training
        policy.eval()
        try:
            with torch.no_grad():
                result = run_rollouts(config, self.env_factory, lambda: policy)
        finally:
            policy.train(was_training)
        suite = result["suites"].get(e.rollout_suite, {})
        log.info(
            "rollout step %d | %s success %.3f over %d trials",
            step,
            e.rollout_suite,
            suite.get("success_rate", 0.0),
            suite.get("trials", 0),
        )
        return suite
