"""Training entry point, as the documents launch it:

    python atlas/train.py --config atlas/configs/train_config.yaml
    torchrun --nproc_per_node=8 atlas/train.py --config atlas/configs/train_config.yaml
    python -m torch.distributed.launch --nproc_per_node=8 atlas/train.py --config ...
    ... --resume runs/atlas_libero/iter_00001000      (or --resume auto)

Parse -> build -> run; everything else lives in the package (`atlas.training.trainer`).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__" and not __package__:
    # Run as a script, Python put atlas/ itself first on sys.path; replace it with the repository
    # root so `import atlas` works without installation and nothing in atlas/ shadows a module.
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import argparse  # noqa: E402
import os  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    from atlas.cli import add_train_args, run_train
    from atlas.logs import setup_logging

    setup_logging(rank=int(os.environ.get("RANK", 0)))
    parser = argparse.ArgumentParser(
        prog="atlas/train.py", description="Train an AtlasVLA policy (single process or torchrun)."
    )
    add_train_args(parser)
    # torch.distributed.launch (without --use-env) passes --local-rank / --local_rank.
    parser.add_argument(
        "--local-rank", "--local_rank", type=int, default=None, help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.local_rank is not None:
        os.environ.setdefault("LOCAL_RANK", str(args.local_rank))
    from atlas.errors import guarded

    return guarded(run_train, args)


if __name__ == "__main__":
    sys.exit(main())
