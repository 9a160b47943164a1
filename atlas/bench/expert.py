"""The scripted expert's success per task, render-free (no cameras, no files written).

    python -m atlas.bench.expert --suite libero_spatial --tasks 0-9 --layouts 5
    python -m atlas.bench.expert --suite libero_object --official 5   # official init states

Layouts are sampled as `atlas data collect` samples them (same seeds, same rejection of invalid
layouts), or with `--official N` taken from the first N official evaluation init states (set,
then the 10 wait steps of the evaluation protocol). For each layout the grasp options are
searched in order, as collection does; the table gives successes, how many needed a second grasp
option, episode lengths and seconds per layout. Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from typing import Any

import numpy as np


def _layouts(scene: Any, task_id: int, count: int, official: bool) -> list[np.ndarray]:
    from atlas.sim.collect import layout_seed
    from atlas.sim.scene import SETTLE_STEPS, WAIT_ACTION

    if official:
        states = []
        for init in scene.official[:count]:
            scene.env.reset()
            scene.env.set_init_state(init)
            for _ in range(SETTLE_STEPS):
                scene.env.step(WAIT_ACTION)
            states.append(scene.env.get_sim_state().copy())
        return states
    states, index = [], 0
    while len(states) < count and index < 20 * count:
        layout = scene.sample_layout(layout_seed(0, task_id, index))
        index += 1
        if layout is not None:
            states.append(layout[0])
    return states


def bench_task(task: Any, count: int, official: bool, max_steps: int) -> dict[str, Any]:
    from atlas.sim.episode import search_episode
    from atlas.sim.scene import TaskScene

    scene = TaskScene(task)
    rows = []
    for state in _layouts(scene, task.task_id, count, official):
        t0 = time.perf_counter()
        ep = search_episode(scene, state, "", max_steps)
        rows.append((ep, time.perf_counter() - t0))
    scene.close()
    wins = [ep for ep, _ in rows if ep is not None]
    return {
        "task_id": task.task_id,
        "task": task.name,
        "layouts": len(rows),
        "successes": len(wins),
        "second_option": sum(ep.attempts > 1 for ep in wins),
        "steps": [ep.num_steps for ep in wins],
        "s_per_layout": round(sum(s for _, s in rows) / max(len(rows), 1), 1),
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--suite", default="libero_spatial")
    p.add_argument("--tasks", default="0-9")
    p.add_argument("--layouts", type=int, default=5, help="sampled layouts per task")
    p.add_argument("--official", type=int, default=0, help="use N official init states instead")
    args = p.parse_args(argv)

    from atlas.eval.libero_env import SUITE_MAX_STEPS
    from atlas.eval.libero_setup import import_libero
    from atlas.eval.rollout_results import stack_versions, wilson_interval
    from atlas.sim.collect import parse_task_ids
    from atlas.sim.scene import suite_tasks

    import_libero()
    tasks = suite_tasks(args.suite)
    count = args.official or args.layouts
    results = []
    print(
        f"{'task':>4} {'expert':>8} {'95% CI':>12} {'2nd grasp':>9} {'steps':>12} {'s/layout':>8}"
    )
    for i in parse_task_ids(args.tasks, len(tasks), args.suite):
        r = bench_task(tasks[i], count, bool(args.official), SUITE_MAX_STEPS[args.suite])
        lo, hi = wilson_interval(r["successes"], r["layouts"])
        steps = f"{min(r['steps'])}-{max(r['steps'])}" if r["steps"] else "-"
        print(
            f"{i:>4} {r['successes']:>3}/{r['layouts']:<4} [{100 * lo:3.0f}, {100 * hi:3.0f}]% "
            f"{r['second_option']:>9} {steps:>12} {r['s_per_layout']:>8}",
            flush=True,
        )
        results.append(r)
    layouts = "official" if args.official else "sampled"
    record = {"suite": args.suite, "layouts": layouts, "tasks": results}
    print(json.dumps({**record, "versions": stack_versions()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
