"""Time the LIBERO simulator as `atlas rollout` drives it: env creation, reset, step, render.

    python scripts/bench_libero_sim.py [--suite libero_spatial] [--task 0] [--image-size 128]
                                       [--steps 30]

Prints wall and CPU seconds (CPU includes the software renderer's threads), so numbers taken on
a busy shared machine can still be compared.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def _timed(fn, *args):
    w, c = time.perf_counter(), time.process_time()
    out = fn(*args)
    return out, time.perf_counter() - w, time.process_time() - c


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--suite", default="libero_spatial")
    p.add_argument("--task", type=int, default=0)
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=30)
    args = p.parse_args()

    from atlas.eval.libero_env import LiberoTaskEnv
    from atlas.eval.libero_setup import import_libero

    _, w, c = _timed(import_libero)
    print(f"import + setup     {w:6.2f} s wall {c:6.2f} s cpu")
    env, w, c = _timed(LiberoTaskEnv, args.suite, args.task, args.image_size)
    print(f"env creation       {w:6.2f} s wall {c:6.2f} s cpu")
    env.seed(7)
    _, w, c = _timed(env.reset)
    print(f"reset (hard)       {w:6.2f} s wall {c:6.2f} s cpu")
    _, w, c = _timed(env.set_init_state, env.init_states[0])
    print(f"set_init_state     {w:6.2f} s wall {c:6.2f} s cpu")
    rng = np.random.default_rng(0)
    walls, cpus = [], []
    for _ in range(args.steps):
        _, w, c = _timed(env.step, rng.uniform(-1, 1, 7))
        walls.append(w)
        cpus.append(c)
    print(
        f"step (2 cameras)   {np.median(walls):6.3f} s wall {np.median(cpus):6.3f} s cpu "
        f"(median of {args.steps}, {args.image_size} px)"
    )
    sim = env._env.sim
    _, w, c = _timed(
        lambda: [
            sim.render(args.image_size, args.image_size, camera_name="agentview") for _ in range(10)
        ]
    )
    print(f"render 1 camera    {w / 10:6.3f} s wall {c / 10:6.3f} s cpu")
    env.close()


if __name__ == "__main__":
    main()
