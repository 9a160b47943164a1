"""Logging setup: rank 0 prints to the console, every rank writes its own log file.

(Named `logs`, not `logging`: running `python atlas/train.py` puts `atlas/` first on sys.path, so a
module named after a standard-library one would shadow it.)
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

_FORMAT = "%(asctime)s %(levelname)s [%(name)s] %(message)s"
_CONSOLE_FORMAT = "%(asctime)s | %(message)s"


def setup_logging(
    rank: int = 0, log_dir: str | Path | None = None, level: int = logging.INFO
) -> None:
    """Configure the root logger once per process.

    Console: rank 0 only, short format. File: `<log_dir>/train.log` on rank 0 and
    `<log_dir>/train_rank<r>.log` on the other ranks, appended so a resumed run keeps its history.
    """
    root = logging.getLogger()
    root.setLevel(level)
    for h in list(root.handlers):
        if getattr(h, "_atlas", False):
            root.removeHandler(h)
            h.close()
    if rank == 0:
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(logging.Formatter(_CONSOLE_FORMAT, "%H:%M:%S"))
        console._atlas = True  # type: ignore[attr-defined]
        root.addHandler(console)
    if log_dir is not None:
        Path(log_dir).mkdir(parents=True, exist_ok=True)
        name = "train.log" if rank == 0 else f"train_rank{rank}.log"
        fh = logging.FileHandler(Path(log_dir) / name)
        fh.setFormatter(logging.Formatter(_FORMAT))
        fh._atlas = True  # type: ignore[attr-defined]
        root.addHandler(fh)
    # Third-party chatter that would drown the training log.
    for noisy in ("urllib3", "matplotlib", "PIL", "h5py", "transformers.modeling_utils"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
