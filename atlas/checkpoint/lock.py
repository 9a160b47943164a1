"""One writer per run directory: an exclusive `flock` on `<save_dir>/run.lock`, held all run long.

Two launches on one `checkpoint.save_dir` would take each other's in-progress saves for stale
leftovers and delete them. Rank 0 of a run therefore locks the directory before anything else
touches it and keeps the lock until the process ends; a second launch stops at once, naming the
holder, and changes nothing. The operating system drops the lock when the holder dies (SIGKILL
included), so a crashed run never leaves a stale lock behind; the file itself stays (removing it
would let two processes lock two different files of the same name). `flock` is honoured on
local file systems and on NFSv4 / Lustre mounts that support it.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from atlas.checkpoint.layout import CheckpointError
from atlas.distributed.env import DistInfo, broadcast_object

log = logging.getLogger(__name__)

LOCK = "run.lock"


class RunDirInUseError(CheckpointError):
    """Another live process holds the run directory's lock."""


def try_lock(save_dir: Path) -> IO[str]:
    """Lock `save_dir` (created if needed) for this process; the open lock file, to keep open.

    Raises `RunDirInUseError` naming the holder when another process has it.
    """
    try:
        save_dir.mkdir(parents=True, exist_ok=True)
        handle = open(save_dir / LOCK, "a+")  # held all run; "a+": never truncated
    except OSError as e:
        raise CheckpointError(
            f"checkpoint.save_dir {save_dir}: cannot create its lock file {LOCK} "
            f"({e.strerror or e}); give a directory this user can write"
        ) from None
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = _describe(handle.read())
        handle.close()
        raise RunDirInUseError(
            f"checkpoint.save_dir {save_dir} is in use by another run ({holder}); wait for it to "
            "finish or stop it, or give this run its own checkpoint.save_dir. Nothing was changed"
        ) from None
    handle.seek(0)
    handle.truncate()
    info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%c")}
    handle.write(json.dumps(info) + "\n")
    handle.flush()
    return handle


def _describe(text: str) -> str:
    try:
        info: dict[str, Any] = json.loads(text)
        return f"pid {info['pid']} on host {info['host']}, since {info['since']}"
    except (ValueError, KeyError, TypeError):
        return "holder unknown"


@contextmanager
def run_dir_lock(save_dir: str | Path, dist: DistInfo) -> Iterator[None]:
    """Hold the lock of `save_dir` on rank 0 for the body. Every rank calls it (a collective):
    when rank 0 cannot lock, every rank raises `RunDirInUseError`, so no rank goes on alone."""
    handle: IO[str] | None = None
    refusal: str | None = None
    if dist.is_main:
        try:
            handle = try_lock(Path(save_dir))
        except RunDirInUseError as e:
            refusal = str(e)
    refusal = broadcast_object(refusal)
    if refusal is not None:
        raise RunDirInUseError(refusal)
    try:
        yield
    finally:
        if handle is not None:
            handle.close()  # closing releases the flock
