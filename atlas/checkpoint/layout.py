"""The checkpoint's on-disk format: names, atomic writes, the completion marker, verification.

File-level half of the checkpoint component (`atlas.checkpoint.manager` holds the manager that
decides what goes in). No torch here, so `atlas ckpt inspect` stays fast. The tree:

    <save_dir>/
      last_checkpoint          one line: path of the newest COMPLETE checkpoint (temp + rename)
      iter_00001000/           a checkpoint, named by optimizer step (8 digits, sorts by name)
        ...files...
        COMPLETE.json          written last: {"files": {name: {"size", "sha256"}}, ...}
      .tmp-iter_00002000-<pid>/   being written; renamed to iter_00002000 when COMPLETE.json is in
      .old-iter_.../ .del-...     a replaced or pruned directory on its way out

A directory is a checkpoint only if COMPLETE.json exists and every file it lists has the listed
size (and, when checked, sha256). Renaming a finished temporary directory is atomic on POSIX
file systems, so a crash at any moment leaves either the old state or the new one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

PREFIX = "iter_"
MARKER = "COMPLETE.json"
META = "meta.json"
MODEL = "model.safetensors"
CONFIG = "config.yaml"
LAST = "last_checkpoint"
FORMAT_VERSION = 1
_NAME_RE = re.compile(r"^iter_(\d+)$")
_STALE_PREFIXES = (".tmp-", ".old-", ".del-", f".{LAST}.tmp-")


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used as asked; the message says why and what to do."""


class CorruptCheckpointError(CheckpointError):
    """A checkpoint is incomplete or its files do not match COMPLETE.json."""

    def __init__(self, path: Path, file: str, problem: str) -> None:
        super().__init__(f"checkpoint {path} is incomplete or corrupt: {file}: {problem}")
        self.path, self.file, self.problem = path, file, problem


def ckpt_name(step: int) -> str:
    return f"{PREFIX}{step:08d}"


def step_of(path: Path) -> int | None:
    m = _NAME_RE.match(path.name)
    return int(m.group(1)) if m else None


def list_checkpoints(save_dir: Path) -> list[Path]:
    """`iter_*` directories of `save_dir`, oldest first (complete or not)."""
    if not save_dir.is_dir():
        return []
    found = [p for p in save_dir.iterdir() if p.is_dir() and step_of(p) is not None]
    return sorted(found, key=lambda p: step_of(p) or 0)


# ---------------------------------------------------------------------------- durable writes


def fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def fsync_dir(path: Path) -> None:
    """Persist a directory's entries (a rename is durable only once its parent is synced)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # not supported on this platform / file system
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` via a temporary sibling and a rename: readers never see half."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def write_marker(directory: Path, extra: dict[str, Any] | None = None) -> None:
    """fsync every file, then write COMPLETE.json (sizes + sha256) last."""
    files: dict[str, dict[str, Any]] = {}
    for p in sorted(directory.rglob("*")):
        if p.is_file() and p.name != MARKER:
            fsync_file(p)
            rel = p.relative_to(directory).as_posix()
            files[rel] = {"size": p.stat().st_size, "sha256": sha256_file(p)}
    body = {"format_version": FORMAT_VERSION, "files": files, **(extra or {})}
    with open(directory / MARKER, "w") as f:
        json.dump(body, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    fsync_dir(directory)


def verify(path: Path, checksums: bool = True) -> dict[str, Any]:
    """Check `path` against its COMPLETE.json; returns the marker, raises naming the bad file."""
    marker = path / MARKER
    if not path.is_dir():
        raise CorruptCheckpointError(path, path.name, "not a directory")
    if not marker.is_file():
        raise CorruptCheckpointError(path, MARKER, "missing (the save never finished)")
    try:
        body = json.loads(marker.read_text())
        files = body["files"]
    except (ValueError, KeyError, TypeError) as e:
        raise CorruptCheckpointError(path, MARKER, f"unreadable ({e})") from None
    for rel, info in files.items():
        f = path / rel
        if not f.is_file():
            raise CorruptCheckpointError(path, rel, "missing")
        size = f.stat().st_size
        if size != info["size"]:
            raise CorruptCheckpointError(path, rel, f"{size} bytes, expected {info['size']}")
        if checksums and sha256_file(f) != info["sha256"]:
            raise CorruptCheckpointError(path, rel, "sha256 mismatch (the file was altered)")
    return body


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


# --------------------------------------------------------------------------- last_checkpoint


def parse_last(save_dir: Path) -> tuple[Path | None, str | None]:
    """(checkpoint `last_checkpoint` names, None) or (None, why the pointer is unusable).

    The pointer holds a name (`iter_00001000`) or, as older runs wrote it, an absolute path. It
    must name an `iter_N` directory of `save_dir` itself: a copied run directory whose pointer
    still names the original's folders must not resume from another run. An absolute path whose
    directory no longer exists falls back to the same name in `save_dir` (a moved run).
    """
    f = save_dir / LAST
    if not f.exists():
        return None, None
    try:
        text = f.read_bytes().decode("utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        return None, f"{f} is unreadable ({type(e).__name__})"
    if not text:
        return None, f"{f} is empty"
    if "\n" in text or len(text) > 4096:
        return None, f"{f} does not hold one path"
    named = Path(text)
    if step_of(named) is None:
        return None, f"{f} names {text!r}, not an {PREFIX}N checkpoint"
    if not named.is_absolute():
        return (save_dir / named, None) if len(named.parts) == 1 else (None, f"{f}: bad {text!r}")
    if named.parent.resolve() == save_dir.resolve() or not named.exists():
        return save_dir / named.name, None
    return None, f"{f} names {named}, which is outside this run directory {save_dir}"


def read_last(save_dir: Path) -> Path | None:
    """The checkpoint `last_checkpoint` names, or None (a warning says why when it is unusable,
    and the newest complete checkpoint is used instead: see `newest_complete`)."""
    last, problem = parse_last(save_dir)
    if problem is not None:
        log.warning("Ignoring the pointer: %s; using the newest complete checkpoint", problem)
    return last


def write_last(save_dir: Path, ckpt: Path) -> None:
    """Point at `ckpt` by name: the run directory stays valid when moved or copied."""
    atomic_write_text(save_dir / LAST, f"{ckpt.name}\n")


# ------------------------------------------------------------------------------- selection


def newest_complete(run_dir: Path) -> Path | None:
    """`last_checkpoint`'s target if complete, else the newest older complete iter_N."""
    last = read_last(run_dir)
    scanned = list_checkpoints(run_dir)[::-1]
    candidates = scanned
    if last is not None:
        # Only older ones are fallbacks: newer iter_N would come from an abandoned timeline.
        limit = step_of(last)
        older = [c for c in scanned if limit is None or (step_of(c) or 0) < limit]
        candidates = [last, *older]
    for cand in candidates:
        try:
            verify(cand)
        except CorruptCheckpointError as e:
            log.warning("%s; falling back to the previous checkpoint", e)
            continue
        return cand
    return None


def weights_source(path: Path, names: tuple[str, ...]) -> Path:
    """A load_from PATH as a weights file or a verified directory holding weights.

    Directories: an iter_N checkpoint or an export, one holding any of `names` (model.safetensors
    or a strategy's own format, `Strategy.weights_file`), or a run directory (its newest complete
    checkpoint).
    """
    if path.is_file():
        return path
    if not path.is_dir():
        raise CheckpointError(f"checkpoint.load_from: {path} does not exist")
    if not any((path / name).exists() for name in names):
        newest = newest_complete(path)
        if newest is None:
            raise CheckpointError(f"checkpoint.load_from: no weights or checkpoint in {path}")
        path = newest
    if (path / MARKER).is_file():
        verify(path)
    return path


# ---------------------------------------------------------------------------- housekeeping


def remove_dir(path: Path) -> None:
    """Delete a directory so that a crash half-way never leaves a half checkpoint under its name."""
    doomed = path.with_name(f".del-{path.name}-{os.getpid()}")
    os.replace(path, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def replace_dir(tmp: Path, target: Path) -> None:
    """Move finished `tmp` to `target`, replacing an existing `target` (kept as .old- meanwhile)."""
    old = None
    if target.exists():
        old = target.with_name(f".old-{target.name}-{os.getpid()}")
        os.replace(target, old)
    os.replace(tmp, target)
    fsync_dir(target.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def cleanup_stale(save_dir: Path) -> None:
    """Remove leftovers of interrupted saves; put back a replaced checkpoint whose successor
    never arrived (a crash between the two renames of `replace_dir`).

    Only the holder of the run directory's lock calls this (`lock`: no other run writes here).
    A leftover whose writer (the pid in its name) is still alive on this machine is kept anyway.
    """
    if not save_dir.is_dir():
        return
    for p in save_dir.iterdir():
        if not p.name.startswith(_STALE_PREFIXES):
            continue
        if _writer_alive(p.name):
            log.warning("Leaving %s: the process that writes it is still running", p)
            continue
        if p.name.startswith(".old-") and p.is_dir():
            original = save_dir / p.name[len(".old-") :].rsplit("-", 1)[0]
            if not original.exists():
                log.info("Restoring %s (its replacement was interrupted)", original)
                os.replace(p, original)
                continue
        log.debug("Removing leftover %s", p)
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


def _writer_alive(name: str) -> bool:
    """Is the process whose pid ends `name` (`.tmp-iter_N-<pid>`) another live one?"""
    pid = name.rsplit("-", 1)[-1]
    if not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True
