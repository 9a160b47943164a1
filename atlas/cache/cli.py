"""`atlas cache`: precompute the frozen-backbone features a config trains on.

    atlas cache --config CFG [--set KEY=VALUE ...]           build (or finish) the cache
    atlas cache --config CFG --check                         hit or miss, and why; builds nothing
    torchrun --nproc_per_node 8 -m atlas.cli cache --config CFG     one shard stream per GPU

Then train with `--set data.use_feature_cache=true` (and the same other overrides): the trainer
finds the store by the same key, and never loads VGGT or the language model.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from atlas.config.schema import AtlasConfig

log = logging.getLogger(__name__)


def add_cache_args(parser: argparse.ArgumentParser) -> None:
    """Options of `atlas cache` (the lead's atlas/cli.py registers them)."""
    from atlas.config.arguments import add_config_args

    add_config_args(parser, required=True)
    parser.add_argument(
        "--shard-size",
        type=int,
        default=256,
        help="samples per shard: the unit of resumption and of work per rank (default 256)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="samples per backbone forward (default: data.batch_size)",
    )
    parser.add_argument("--check", action="store_true", help="report hit or miss; build nothing")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run_cache_command(args: argparse.Namespace) -> int:
    """Load the config, then check or build its cache. Exit: 0 built/hit, 1 miss, 2 bad config."""
    from atlas.config import ConfigError, load_config

    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as e:
        sys.stderr.write(f"error: {e}\n")
        return 2
    if args.shard_size < 1 or (args.batch_size is not None and args.batch_size < 1):
        sys.stderr.write("error: --shard-size and --batch-size must be >= 1\n")
        return 2
    if not (cfg.model.vggt.freeze and cfg.model.language_encoder.freeze):
        sys.stderr.write(
            "error: the feature cache needs frozen backbones "
            "(model.vggt.freeze and model.language_encoder.freeze true)\n"
        )
        return 2
    from atlas.cache.build import num_variants

    try:
        num_variants(cfg)
    except ValueError as e:
        sys.stderr.write(f"error: {e}\n")
        return 2
    if args.check:
        return _check(cfg)
    return _build(cfg, args)


def _check(cfg: AtlasConfig) -> int:
    from atlas.cache.build import open_cached_datasets
    from atlas.cache.store import CacheMissError
    from atlas.data import build_datasets
    from atlas.distributed.env import init_distributed

    dist = init_distributed(device=None)
    train, val, _ = build_datasets(cfg)
    try:
        cached, _ = open_cached_datasets(cfg, train, val, dist.device)
    except CacheMissError as e:
        sys.stdout.write(f"miss: {e}\n")
        return 1
    sys.stdout.write(f"hit: {cached.split.dir.parent} ({len(cached)} train samples)\n")
    return 0


def _build(cfg: AtlasConfig, args: argparse.Namespace) -> int:
    from atlas.cache.build import build_feature_cache
    from atlas.distributed.env import init_distributed, teardown_distributed

    dist = init_distributed(cfg.training.dist_timeout_minutes)
    try:
        result = build_feature_cache(
            cfg,
            dist,
            shard_size=args.shard_size,
            batch_size=args.batch_size,
            progress=not args.no_progress and sys.stderr.isatty(),
        )
    finally:
        teardown_distributed()
    if dist.is_main:
        rate = result.samples / result.compute_seconds if result.compute_seconds else 0.0
        sys.stdout.write(
            f"{'hit' if result.hit else 'built'}: {result.directory} "
            f"({result.bytes_per_sample / 1024:.1f} KB per training sample"
            f"{f', {rate:.1f} samples/s on rank 0' if not result.hit else ''})\n"
        )
    return 0
