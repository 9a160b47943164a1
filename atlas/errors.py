"""Which errors are the user's to fix, and how a command reports them.

A bad config, data file, checkpoint or weights file, or a missing path, is reported in one line that
names the file / dotted key / flag and the fix, with exit code 2 and no traceback: the traceback
would only bury the line. A run whose numbers went bad (a non-finite loss, gradient or weight) is a
`FloatingPointError` and exits 1 the same way. `--debug` or `ATLAS_DEBUG=1` re-raises instead, for
the full traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Callable

log = logging.getLogger("atlas")

EXIT_USER_ERROR = 2  # the input is wrong: nothing was started (or nothing was lost)
EXIT_NUMERICS = 1  # the run diverged: stopped, the last good checkpoint kept


def user_errors() -> tuple[type[BaseException], ...]:
    """Errors caused by the user's files or settings (imported here: `atlas --help` stays fast)."""
    from atlas.checkpoint.layout import CheckpointError
    from atlas.config import ConfigError
    from atlas.data.errors import DataError
    from atlas.models.vggt.loading import WeightsError
    from atlas.safeload import RefusedFileError

    errors = (ConfigError, DataError, CheckpointError, RefusedFileError, WeightsError)
    return (*errors, FileNotFoundError)


def debug_enabled(args: argparse.Namespace | None = None) -> bool:
    """True with `--debug` on the command line or ATLAS_DEBUG=1 in the environment."""
    return bool(getattr(args, "debug", False)) or os.environ.get("ATLAS_DEBUG", "") == "1"


def one_line(error: BaseException) -> str:
    """The error's message on one line (a message listing several problems keeps them all)."""
    text = str(error) or type(error).__name__
    return "; ".join(part.strip() for part in text.splitlines() if part.strip())


def guarded(handler: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run a command handler; user errors -> one line + exit 2, bad numbers -> one line + exit 1."""
    try:
        return handler(args)
    except user_errors() as e:
        if debug_enabled(args):
            raise
        log.error("error: %s", one_line(e))
        return EXIT_USER_ERROR
    except FloatingPointError as e:
        if debug_enabled(args):
            raise
        log.error("error: %s", one_line(e))
        return EXIT_NUMERICS
