"""The `atlas` command: one thin subcommand per job, each a call into the package.

    atlas train    [--config CFG] [--set KEY=VALUE ...] [--resume PATH]   train (default: the demo)
    atlas eval     --checkpoint DIR                                       offline metrics
    atlas rollout  --checkpoint DIR --suite libero_spatial                closed loop in LIBERO
    atlas serve    --checkpoint DIR [--port 8000]                         openpi policy server
    atlas data     stats | synth | inspect | convert                      datasets
    atlas model    summary --config CFG [--meta]                          parameter counts
    atlas ckpt     inspect PATH                                           checkpoints
    atlas cache    --config CFG                                           frozen-feature cache
    atlas doctor   [--config CFG]                                         environment checks

Subcommands import their module only when they run, so `atlas --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence

from atlas.config.arguments import add_config_args, packaged_config

log = logging.getLogger("atlas")

DEMO_CONFIG = "debug.yaml"


def add_train_args(p: argparse.ArgumentParser) -> None:
    add_config_args(p)
    p.add_argument(
        "--resume",
        metavar="PATH",
        help="resume from a checkpoint directory, or "
        "'auto' for the newest complete one in checkpoint.save_dir "
        "(same as --set checkpoint.resume=PATH)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="validate the config, print the resolved YAML and exit",
    )
    add_debug_arg(p)


def add_debug_arg(p: argparse.ArgumentParser) -> None:
    """--debug: show the traceback of an error instead of its one-line report (or ATLAS_DEBUG=1)."""
    p.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,  # keeps `atlas --debug train` working (the top-level flag)
        help="show the full traceback of an error (same as ATLAS_DEBUG=1)",
    )


def run_train(args: argparse.Namespace) -> int:
    """`atlas train` and `python atlas/train.py`: config -> run_training.

    Run it through `atlas.errors.guarded`: a bad input (found before anything is written) exits 2
    in one line, a run whose loss or gradients went non-finite exits 1.
    """
    from atlas.config import dump_yaml, load_config

    config = args.config or str(packaged_config(DEMO_CONFIG))
    overrides = list(args.overrides)
    if args.resume:
        overrides.append(f"checkpoint.resume={args.resume}")
    cfg = load_config(config, overrides)
    if args.dry_run:
        sys.stdout.write(dump_yaml(cfg))
        return 0
    if not args.config:
        log.info("No --config given: training the embedded demo (%s)", config)
    from atlas.training.trainer import run_training

    run_training(cfg, progress=not args.no_progress)
    return 0


def _lazy(module: str, func: str) -> Callable[[argparse.Namespace], int]:
    """A handler that imports `module` only when the subcommand runs."""

    def handler(args: argparse.Namespace) -> int:
        return int(getattr(importlib.import_module(module), func)(args) or 0)

    return handler


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="atlas",
        description="AtlasVLA: train and evaluate a geometry-grounded VLA on LIBERO.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run 'atlas COMMAND --help' for the options of one command.",
    )
    parser.add_argument(
        "--debug", action="store_true", help="show the full traceback of an error (ATLAS_DEBUG=1)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("train", help="train a policy (no --config: the CPU demo)")
    add_train_args(p)
    p.set_defaults(handler=run_train)

    from atlas.eval.offline_cli import add_eval_args
    from atlas.eval.rollout_cli import add_rollout_args

    p = sub.add_parser("eval", help="offline metrics of a checkpoint on held-out episodes")
    add_eval_args(p)
    p.set_defaults(handler=_lazy("atlas.eval.offline_cli", "run_eval_command"))

    p = sub.add_parser("rollout", help="closed-loop success rate in LIBERO or the synthetic world")
    add_rollout_args(p)
    p.set_defaults(handler=_lazy("atlas.eval.rollout_cli", "run_rollout_command"))

    from atlas.checkpoint.cli import add_ckpt_subcommands
    from atlas.serving.cli import add_serve_args

    p = sub.add_parser("serve", help="serve a policy over openpi's websocket protocol")
    add_serve_args(p)
    p.set_defaults(handler=_lazy("atlas.serving.cli", "run_serve_command"))

    from atlas.data.cli import add_data_subcommands
    from atlas.models.cli import add_model_subcommands
    from atlas.sim.cli import add_collect_parser  # the simulator itself is imported only on use

    data = add_data_subcommands(
        sub.add_parser("data", help="datasets: stats, synth, inspect, convert")
    )
    # `atlas data collect` runs the simulator (atlas.sim), which sits above the data package.
    add_collect_parser(data)
    add_model_subcommands(sub.add_parser("model", help="model summary (parameter counts)"))
    add_ckpt_subcommands(sub.add_parser("ckpt", help="inspect checkpoints"))

    from atlas.cache.cli import add_cache_args

    p = sub.add_parser("cache", help="precompute frozen-backbone features for fast training")
    add_cache_args(p)
    p.set_defaults(handler=_lazy("atlas.cache.cli", "run_cache_command"))

    p = sub.add_parser("doctor", help="check the environment (and a config's paths)")
    add_config_args(p)
    add_debug_arg(p)
    p.set_defaults(handler=_lazy("atlas.doctor", "run_doctor"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from atlas.logs import setup_logging

    setup_logging(rank=_env_rank())
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "handler", None) is None:
        parser.print_help()
        return 0
    from atlas.errors import guarded

    return guarded(args.handler, args)


def _env_rank() -> int:
    import os

    return int(os.environ.get("RANK", 0))


if __name__ == "__main__":
    sys.exit(main())
