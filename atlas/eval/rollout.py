"""Closed-loop LIBERO evaluation with the protocol everyone reports (docs/LIBERO.md §6).

Per task of a suite and per trial i:

    policy.reset(); env.seed(seed); env.reset(); obs = env.set_init_state(init_states[i])
    10 wait steps with [0, 0, 0, 0, 0, 0, -1]           (objects settle; `done` is not checked)
    until done or the suite's step limit:
        chunk = policy.predict_action(obs)              [H, 7]
        execute chunk[:replan_interval], each clipped to [-1, 1], stopping at done

success = `done` (the BDDL goal holds) at any policy step. The environment comes from an injectable
factory (`EnvFactory`), so tests drive this loop with a fake env and no simulator. With
`workers > 1`, spawned processes each build their own env and policy; results stream back to
this process, which appends them to the results file that a rerun resumes from.
"""

from __future__ import annotations

import difflib
import logging
import multiprocessing as mp
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm import tqdm

from atlas.eval.libero_env import SUITE_MAX_STEPS
from atlas.eval.policies import ACTION_DIM, PolicyOutputError, RolloutPolicy
from atlas.eval.rollout_results import (
    EpisodeResult,
    ResultsFile,
    RolloutSetupError,
    check_run_config,
    format_table,
    summarize,
    write_summary,
)
from atlas.eval.synthetic_env import SYNTHETIC_MAX_STEPS, SYNTHETIC_SUITE
from atlas.eval.video import side_by_side, write_video

log = logging.getLogger(__name__)

WAIT_STEPS = 10
WAIT_ACTION = np.array([0, 0, 0, 0, 0, 0, -1], dtype=np.float64)  # no motion, gripper open
# Policy steps per episode of every suite: LIBERO's, and the synthetic world's (atlas.eval.
# synthetic_env), which runs through this same loop.
STEP_LIMITS: dict[str, int] = {**SUITE_MAX_STEPS, SYNTHETIC_SUITE: SYNTHETIC_MAX_STEPS}


def check_rollout_suite(suite: str) -> str:
    """`suite` if it is a known LIBERO suite or the synthetic one, else a ValueError."""
    if suite not in STEP_LIMITS:
        close = difflib.get_close_matches(suite, list(STEP_LIMITS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown suite {suite!r}{hint} (known: {', '.join(STEP_LIMITS)})")
    return suite


class TaskEnv(Protocol):
    """One task's environment, in policy observation format (see `atlas.eval.libero_env`)."""

    task_name: str
    instruction: str
    init_states: np.ndarray  # [N, D]

    def seed(self, seed: int) -> None: ...
    def reset(self) -> None: ...
    def set_init_state(self, state: np.ndarray) -> dict[str, Any]: ...
    def step(self, action: np.ndarray) -> tuple[dict[str, Any], bool]: ...
    def close(self) -> None: ...


class EnvFactory(Protocol):
    """Builds the env of (suite, task id). Must pickle when `workers > 1`."""

    def __call__(self, suite: str, task_id: int) -> TaskEnv: ...
    def num_tasks(self, suite: str) -> int: ...


@dataclass(frozen=True)
class RolloutConfig:
    """What to run. `max_steps` overrides the suite's step limit (smoke tests)."""

    suite: str
    out_dir: Path
    tasks: tuple[int, ...] | None = None  # None: every task of the suite
    trials: int = 50
    seed: int = 7
    replan_interval: int = 8
    max_steps: int | None = None
    videos: int = 0  # record the first `videos` trials of each task
    workers: int = 1
    progress: bool | None = None  # None: only when stderr is a terminal

    def __post_init__(self) -> None:
        check_rollout_suite(self.suite)
        # Accept str / list from callers; frozen, hence object.__setattr__.
        object.__setattr__(self, "out_dir", Path(self.out_dir))
        if self.tasks is not None:
            object.__setattr__(self, "tasks", tuple(self.tasks))
        for name in ("trials", "replan_interval", "workers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")

    @property
    def step_limit(self) -> int:
        return self.max_steps if self.max_steps is not None else STEP_LIMITS[self.suite]


@dataclass
class EpisodeOutcome:
    success: bool
    steps: int  # policy steps executed
    frames: list[np.ndarray] = field(default_factory=list)  # [h, 2w, 3] each, when recorded


def as_action_chunk(actions: Any) -> np.ndarray:
    """Policy output -> float64 [H, 7] clipped to [-1, 1]; a single action [7] becomes [1, 7]."""
    chunk = np.asarray(actions, dtype=np.float64)
    if chunk.ndim == 1:
        chunk = chunk[None]
    if chunk.ndim != 2 or chunk.shape[0] == 0 or chunk.shape[1] != ACTION_DIM:
        raise PolicyOutputError(
            f"policy must return actions [H, {ACTION_DIM}] (xyz, roll-pitch-yaw, gripper), got "
            f"{chunk.shape}"
        )
    if not np.isfinite(chunk).all():
        raise PolicyOutputError("policy returned non-finite actions")
    return np.clip(chunk, -1.0, 1.0)


def run_episode(
    env: TaskEnv,
    policy: RolloutPolicy,
    init_state: np.ndarray,
    seed: int,
    step_limit: int,
    replan_interval: int,
    record: bool = False,
) -> EpisodeOutcome:
    """One trial of the protocol in the module docstring."""
    policy.reset()
    env.seed(seed)
    env.reset()
    obs = env.set_init_state(init_state)
    frames = [side_by_side(obs)] if record else []
    for _ in range(WAIT_STEPS):
        # `done` is ignored while waiting, as in OpenVLA and openpi: the robot has not acted yet.
        obs, _ = env.step(WAIT_ACTION.copy())
        if record:
            frames.append(side_by_side(obs))
    steps = 0
    while steps < step_limit:
        chunk = as_action_chunk(policy.predict_action(obs))
        for action in chunk[:replan_interval]:
            obs, done = env.step(action)
            steps += 1
            if record:
                frames.append(side_by_side(obs))
            if done:
                return EpisodeOutcome(True, steps, frames)
            if steps >= step_limit:
                break
    return EpisodeOutcome(False, steps, frames)


class _Worker:
    """Runs trials in one process: one policy, and one env kept while its task's trials last."""

    def __init__(
        self,
        env_factory: EnvFactory,
        policy_factory: Callable[[], RolloutPolicy],
        config: RolloutConfig,
    ) -> None:
        self.env_factory, self.config = env_factory, config
        self.policy = policy_factory()
        self.env: TaskEnv | None = None
        self.task_id: int | None = None

    def _env_for(self, task_id: int) -> TaskEnv:
        if self.task_id != task_id or self.env is None:
            self.close()
            start = time.perf_counter()
            self.env = self.env_factory(self.config.suite, task_id)
            self.task_id = task_id
            log.info(
                "task %d env ready in %.1f s: %s",
                task_id,
                time.perf_counter() - start,
                self.env.instruction,
            )
            if self.config.trials > len(self.env.init_states):
                raise RolloutSetupError(
                    f"--trials {self.config.trials} exceeds the "
                    f"{len(self.env.init_states)} initial states of task {task_id}"
                )
        return self.env

    def run(self, task_id: int, trial: int) -> EpisodeResult:
        cfg = self.config
        env = self._env_for(task_id)
        record = trial < cfg.videos
        start = time.perf_counter()
        out = run_episode(
            env,
            self.policy,
            env.init_states[trial],
            cfg.seed,
            cfg.step_limit,
            cfg.replan_interval,
            record,
        )
        video = None
        if record:
            name = f"task{task_id:02d}_trial{trial:03d}_{'success' if out.success else 'failure'}"
            video = str(write_video(cfg.out_dir / "videos" / f"{name}.mp4", out.frames))
        return EpisodeResult(
            cfg.suite,
            task_id,
            env.task_name,
            env.instruction,
            trial,
            cfg.seed,
            out.success,
            out.steps,
            round(time.perf_counter() - start, 3),
            video,
        )

    def close(self) -> None:
        if self.env is not None:
            self.env.close()
            self.env = None


_PROCESS_WORKER: _Worker | None = None  # the worker of a spawned process


def _init_process(
    env_factory: EnvFactory,
    policy_factory: Callable[[], RolloutPolicy],
    config: RolloutConfig,
    log_level: int,
) -> None:
    global _PROCESS_WORKER
    # A spawned process starts with no logging setup; mirror the parent's level, tagged by pid.
    logging.basicConfig(
        level=log_level, format="%(asctime)s | [worker %(process)d] %(message)s", datefmt="%H:%M:%S"
    )
    _PROCESS_WORKER = _Worker(env_factory, policy_factory, config)
    if "torch" in sys.modules:
        # N workers on N cores: more intra-op threads per process would only contend.
        sys.modules["torch"].set_num_threads(max(1, (os.cpu_count() or 1) // config.workers))


def _run_in_process(task_id: int, trial: int) -> EpisodeResult:
    assert _PROCESS_WORKER is not None, "_init_process runs first"
    return _PROCESS_WORKER.run(task_id, trial)


def pending_trials(
    config: RolloutConfig, task_ids: list[int], done: set[tuple[str, int, int]]
) -> list[tuple[int, int]]:
    """(task id, trial) pairs still to run, task-major so a worker keeps its env across trials."""
    return [
        (t, i) for t in task_ids for i in range(config.trials) if (config.suite, t, i) not in done
    ]


def _task_ids(config: RolloutConfig, n_tasks: int) -> list[int]:
    """The requested task ids (default: all), checked against the suite before any work."""
    if config.tasks is None:
        return list(range(n_tasks))
    bad = [t for t in config.tasks if not 0 <= t < n_tasks]
    if bad:
        raise RolloutSetupError(f"--tasks: {config.suite} has tasks 0..{n_tasks - 1}; got {bad}")
    return list(config.tasks)


def run_rollouts(
    config: RolloutConfig,
    env_factory: EnvFactory,
    policy_factory: Callable[[], RolloutPolicy],
    settings: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run every pending trial, append each to `<out>/results.jsonl`, and return the summary.

    `settings` (policy identity, image size, ...) are recorded with the seed, replan interval and
    step limit in `rollout_config.json`; a resumed run must match them. The summary
    (`summarize`) covers the requested tasks, resumed episodes included, and is also written to
    `<out>/results.json` and logged as a table.
    """
    out_dir = Path(config.out_dir)
    task_ids = _task_ids(config, env_factory.num_tasks(config.suite))
    check_run_config(
        out_dir,
        {
            "suite": config.suite,
            "seed": config.seed,
            "replan_interval": config.replan_interval,
            "step_limit": config.step_limit,
            **(settings or {}),
        },
    )
    results = ResultsFile(out_dir / "results.jsonl")
    todo = pending_trials(config, task_ids, results.done_keys())
    log.info(
        "%s: %d tasks x %d trials, %d to run (%d already in %s)",
        config.suite,
        len(task_ids),
        config.trials,
        len(todo),
        len(task_ids) * config.trials - len(todo),
        results.path,
    )
    if todo:
        _execute(config, env_factory, policy_factory, todo, results)
    summary = summarize(results.load(), task_ids)
    write_summary(out_dir / "results.json", summary)
    log.info("results (%s):\n%s", out_dir, format_table(summary))
    return summary


def _execute(
    config: RolloutConfig,
    env_factory: EnvFactory,
    policy_factory: Callable[[], RolloutPolicy],
    todo: list[tuple[int, int]],
    results: ResultsFile,
) -> None:
    """Run `todo` inline (1 worker) or in spawned processes, recording results as they come."""
    show = sys.stderr.isatty() if config.progress is None else config.progress
    bar = tqdm(total=len(todo), desc=config.suite, unit="ep", disable=not show)
    wins = 0

    def record(result: EpisodeResult) -> None:
        nonlocal wins
        results.append(result)
        wins += result.success
        bar.update(1)
        bar.set_postfix(success=f"{wins}/{bar.n}", refresh=False)
        log.debug(
            "task %d trial %d: %s in %d steps",
            result.task_id,
            result.trial,
            "success" if result.success else "failure",
            result.steps,
        )

    try:
        if config.workers == 1:
            worker = _Worker(env_factory, policy_factory, config)
            try:
                for task_id, trial in todo:
                    record(worker.run(task_id, trial))
            finally:
                worker.close()
        else:
            _execute_parallel(config, env_factory, policy_factory, todo, record)
    finally:
        bar.close()


def _execute_parallel(
    config: RolloutConfig,
    env_factory: EnvFactory,
    policy_factory: Callable[[], RolloutPolicy],
    todo: list[tuple[int, int]],
    record: Callable[[EpisodeResult], None],
) -> None:
    # spawn, not fork: MuJoCo's GL contexts and torch's threads do not survive a fork.
    pool = ProcessPoolExecutor(
        max_workers=min(config.workers, len(todo)),
        mp_context=mp.get_context("spawn"),
        initializer=_init_process,
        initargs=(env_factory, policy_factory, config, logging.getLogger().getEffectiveLevel()),
    )
    try:
        futures: list[Future[EpisodeResult]] = [pool.submit(_run_in_process, t, i) for t, i in todo]
        for future in as_completed(futures):
            record(future.result())  # re-raises a worker's exception here
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
