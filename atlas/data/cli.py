"""`atlas data {stats,synth,inspect,convert,collect}`: thin wrappers over the data package.

Wiring (atlas/cli.py), like the other command groups:

    add_data_subcommands(sub.add_parser("data", help="LIBERO datasets: stats, synth, inspect"))
    ...
    args = parser.parse_args(); sys.exit(args.handler(args))

Every subcommand sets `handler(args) -> int` (0 success, 1 bad data, 2 bad arguments). The module
also runs alone: `python -m atlas.data.cli stats PATHS`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from atlas.data.errors import DataError

log = logging.getLogger(__name__)


def add_data_subcommands(
    parser: argparse.ArgumentParser | argparse._SubParsersAction,
) -> argparse._SubParsersAction:
    """Add `stats`, `synth`, `inspect` and `convert` under the `atlas data` parser (or a
    subparsers object); returns the subparsers (atlas.cli adds `collect` from atlas.sim)."""
    if isinstance(parser, argparse.ArgumentParser):
        parser = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
    subparsers = parser
    stats = subparsers.add_parser(
        "stats", help="per-dimension action/proprio statistics (normalization JSON)"
    )
    stats.add_argument(
        "paths", nargs="+", help="suite folders, .hdf5 files or globs, or LeRobotDataset folders"
    )
    stats.add_argument("--out", help="write the JSON here (default: print it)")
    stats.add_argument("--filter-noops", action="store_true", help="drop no-op steps first")
    stats.add_argument("--skip-bad-episodes", action="store_true", help="skip bad demos")
    stats.set_defaults(handler=run_stats)

    synth = subparsers.add_parser("synth", help="write the learnable synthetic LIBERO dataset")
    synth.add_argument("out", help="output folder (must not exist or be empty)")
    synth.add_argument("--tasks", type=int, default=4, help="files, one task each (1-18)")
    synth.add_argument("--demos", type=int, default=10, help="demos per task")
    synth.add_argument("--steps", type=int, default=40, help="maximum steps per demo")
    synth.add_argument("--image-size", type=int, default=128, help="camera side in pixels")
    synth.add_argument("--seed", type=int, default=0)
    synth.set_defaults(handler=run_synth)

    inspect = subparsers.add_parser("inspect", help="files, tasks, demos, steps, shapes, ranges")
    inspect.add_argument(
        "paths", nargs="+", help="suite folders, .hdf5 files or globs, or LeRobotDataset folders"
    )
    inspect.add_argument("--json", action="store_true", help="machine-readable output")
    inspect.add_argument(
        "--quick", action="store_true", help="check only the first demo of each file (fast)"
    )
    inspect.add_argument(
        "--cameras",
        help="comma-separated cameras every demo must have (default: every obs/*_rgb found)",
    )
    inspect.set_defaults(handler=run_inspect)

    convert = subparsers.add_parser(
        "convert", help="write LIBERO HDF5 demos as a LeRobotDataset v3.0 folder"
    )
    convert.add_argument("paths", nargs="+", help="suite folders, .hdf5 files or globs")
    convert.add_argument("--out", required=True, help="output folder (must not exist or be empty)")
    convert.add_argument("--images", action="store_true", help="PNG images instead of AV1 videos")
    convert.add_argument("--fps", type=int, default=10, help="frame rate recorded in the dataset")
    convert.add_argument(
        "--stored-orientation",
        choices=["rot180", "none"],
        default="rot180",
        help="rot180: rotate frames as the LIBERO LeRobot publications do; none: as in the HDF5",
    )
    convert.set_defaults(handler=run_convert)
    return subparsers


def run_stats(args: argparse.Namespace) -> int:
    from atlas.data.lerobot import build_lerobot_index
    from atlas.data.lerobot_meta import is_lerobot_root
    from atlas.data.libero_hdf5 import build_index
    from atlas.data.normalization import save_stats
    from atlas.data.stats import compute_stats

    lerobot = all(is_lerobot_root(p) for p in args.paths)
    try:
        index = (build_lerobot_index if lerobot else build_index)(
            args.paths,
            cameras=(),  # statistics need no image: skip the camera checks
            filter_noops=args.filter_noops,
            skip_bad_episodes=args.skip_bad_episodes,
        )
    except DataError as e:
        return _fail(e)
    stats = compute_stats(index)
    stats["filter_noops"] = bool(args.filter_noops)
    if args.out:
        save_stats(stats, args.out)
        print(f"wrote {args.out}: {stats['num_samples']} steps of {stats['num_episodes']} demos")
    else:
        print(json.dumps(stats, indent=2))
    return 0


def run_synth(args: argparse.Namespace) -> int:
    from atlas.data.synthetic import generate_synthetic

    try:
        out = generate_synthetic(
            args.out, args.tasks, args.demos, args.steps, args.image_size, args.seed
        )
    except (FileExistsError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.tasks} task files to {out}")
    return 0


def run_inspect(args: argparse.Namespace) -> int:
    """Exit 0 when every demo checks out, 1 when any problem was found (all are listed)."""
    from atlas.data.summary import format_problems, format_summary, inspect_files

    cameras = [c for c in args.cameras.split(",") if c] if args.cameras else None
    try:
        summary = inspect_files(args.paths, cameras=cameras, quick=args.quick)
    except DataError as e:
        return _fail(e)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(format_summary(summary))
        if summary["problems"]:
            print(format_problems(summary), file=sys.stderr)
    return 1 if summary["problems"] else 0


def run_convert(args: argparse.Namespace) -> int:
    from atlas.data.lerobot_write import convert_to_lerobot

    if args.fps < 1:
        print(f"error: --fps must be >= 1, got {args.fps}", file=sys.stderr)
        return 2
    try:
        out = convert_to_lerobot(
            args.paths,
            args.out,
            fps=args.fps,
            video=not args.images,
            stored_orientation=args.stored_orientation,
        )
    except (DataError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out} (LeRobotDataset v3.0, {'PNG images' if args.images else 'AV1 videos'})")
    return 0


def _fail(error: DataError) -> int:
    print(f"error: {error}", file=sys.stderr)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    """Standalone entry: `python -m atlas.data.cli {stats,synth,inspect} ...`."""
    parser = argparse.ArgumentParser(prog="atlas data", description=__doc__.splitlines()[0])
    add_data_subcommands(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
