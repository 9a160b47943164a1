"""`atlas data collect`: the command-line face of `atlas.sim.collect`.

Every check that can fail on the user's input (suite, task ids, output folder, a simulator that
cannot start) runs before anything is written, and fails with one line and exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

log = logging.getLogger(__name__)


def add_collect_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add `collect` under `atlas data`."""
    p = subparsers.add_parser(
        "collect", help="scripted demonstrations in the LIBERO simulator (released HDF5 layout)"
    )
    p.add_argument("--suite", required=True, help="LIBERO suite, e.g. libero_spatial")
    p.add_argument("--tasks", default="0-9", help="task ids: '0-9', '3', '0,2,5-7'")
    p.add_argument("--demos", type=int, default=50, help="successful demos per task")
    p.add_argument("--out", required=True, help="output folder (rerun the command to resume)")
    p.add_argument("--workers", type=int, default=1, help="parallel simulator processes")
    p.add_argument("--image-size", type=int, default=128, help="camera side in pixels")
    p.add_argument("--seed", type=int, default=0, help="base of the layout seeds")
    p.add_argument("--max-seeds", type=int, default=0, help="layouts per task (0: 4 x demos)")
    p.add_argument("--assets", help="LIBERO assets folder (default: the sim-assets packages)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=run_collect)


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def _start_simulator(assets: str | None) -> None:
    """Import LIBERO ready for offline use; every way that can fail becomes one error type."""
    from atlas.eval.libero_setup import SimulatorUnavailableError, import_libero

    try:
        import_libero(assets)
    except SimulatorUnavailableError:
        raise
    except (ImportError, RuntimeError, OSError) as e:  # e.g. MuJoCo refusing MUJOCO_GL
        raise SimulatorUnavailableError(
            f"the LIBERO simulator could not start: {type(e).__name__}: {e}"
        ) from None


def run_collect(args: argparse.Namespace) -> int:
    from pathlib import Path

    from atlas.eval.libero_setup import ASSETS_ENV, SimulatorUnavailableError
    from atlas.sim import collect as c

    if args.demos < 1 or args.workers < 1 or args.image_size < 16 or args.max_seeds < 0:
        return _fail("need --demos >= 1, --workers >= 1, --image-size >= 16, --max-seeds >= 0")
    try:
        _start_simulator(args.assets)
        if args.assets:  # spawned workers find the assets through the environment
            os.environ[ASSETS_ENV] = str(Path(args.assets).expanduser().resolve())
        from atlas.sim.scene import suite_tasks
        from atlas.sim.worker import warm_up

        tasks = suite_tasks(args.suite)
        ids = c.parse_task_ids(args.tasks, len(tasks), args.suite)
        plan = c.CollectPlan(
            args.suite,
            tuple(tasks[i] for i in ids),
            args.demos,
            Path(args.out),
            args.workers,
            args.image_size,
            args.seed,
            args.max_seeds,
        )
        c.check_out_dir(plan, {c.task_file_name(t) for t in tasks})
        warm_up(plan.tasks[0], plan.image_size)
    except (SimulatorUnavailableError, ValueError) as e:
        return _fail(str(e))
    logging.getLogger("atlas").setLevel(logging.INFO)
    try:
        rows = c.collect(plan, progress=not args.no_progress)
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to continue", file=sys.stderr)
        return 130
    print(c.format_summary(rows))
    complete = sum(r["demos"] >= plan.demos for r in rows)
    print(f"{complete}/{len(plan.tasks)} task files complete in {plan.out}")
    return 0 if complete == len(plan.tasks) else 1
