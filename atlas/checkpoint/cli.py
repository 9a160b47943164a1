"""`atlas ckpt inspect PATH [--json]`: what a checkpoint holds and whether it is intact.

    atlas ckpt inspect runs/atlas/iter_00001000     one checkpoint
    atlas ckpt inspect runs/atlas                   the run's checkpoints + the newest complete one
    atlas ckpt inspect runs/atlas/best --json       an exported policy, as JSON

Prints step, epoch and position, samples seen, the effective batch and its split, world size,
the best validation metric, and every file with its size; checks the files against
COMPLETE.json (sha256 unless --no-checksums) and screens every pickle-based file as a resume
would (`atlas.safeload`). Exit code 0 when intact, 1 when incomplete or corrupt, 2
when PATH is not a checkpoint or holds a file that would be refused. For a run directory it says
which checkpoint `resume: auto` would take, and why `last_checkpoint` is ignored if it is.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from atlas.checkpoint import layout


def add_ckpt_subcommands(parser: argparse.ArgumentParser) -> None:
    """Add `inspect` under the `atlas ckpt` parser."""
    sub = parser.add_subparsers(dest="ckpt_command", metavar="SUBCOMMAND", required=True)
    p = sub.add_parser("inspect", help="step, epoch, batch, best metric, files of a checkpoint")
    p.add_argument("path", help="an iter_N directory, a run directory or an export (best/)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument(
        "--no-checksums", action="store_true", help="check file sizes only (fast on big files)"
    )
    p.set_defaults(handler=run_inspect)


def inspect_checkpoint(path: Path, checksums: bool = True) -> dict[str, Any]:
    """Everything `inspect` shows about one checkpoint or export directory."""
    info: dict[str, Any] = {"path": str(path), "status": "complete", "problem": None}
    try:
        layout.verify(path, checksums=checksums)
    except layout.CorruptCheckpointError as e:
        info.update(status="incomplete or corrupt", problem=f"{e.file}: {e.problem}")
    files = sorted(p for p in path.rglob("*") if p.is_file())
    info["files"] = [
        {"name": f.relative_to(path).as_posix(), "size": f.stat().st_size} for f in files
    ]
    info["total_size"] = sum(f["size"] for f in info["files"])
    meta_file = path / layout.META
    meta = _read_meta(meta_file) if meta_file.is_file() else None
    if meta is None and meta_file.is_file():
        info.update(
            kind="unknown", status="incomplete or corrupt", problem=f"{layout.META}: unreadable"
        )
    elif meta is not None:
        prog, batch = meta.get("progress", {}), meta.get("batch", {})
        info.update(
            kind="checkpoint",
            step=meta.get("step"),
            epoch=prog.get("epoch"),
            batch_in_epoch=prog.get("batch_in_epoch"),
            samples_seen=prog.get("samples_seen"),
            effective_batch=batch,
            world_size=batch.get("world_size"),
            best_val_loss=prog.get("best_val_loss"),
            best_step=prog.get("best_step"),
            reason=meta.get("reason"),
            created=meta.get("created"),
            frozen_weights_saved=meta.get("model", {}).get("frozen_saved"),
            strategy_format=meta.get("model", {}).get("owner"),
        )
    else:
        info["kind"] = "export" if (path / layout.MODEL).is_file() else "unknown"
    return info


def run_inspect(args: argparse.Namespace) -> int:
    path = Path(args.path)
    if not path.is_dir():
        sys.stderr.write(f"error: {path} is not a directory\n")
        return 2
    run: dict[str, Any] | None = None
    if not (path / layout.MARKER).exists() and not (path / layout.META).exists():
        ckpts = layout.list_checkpoints(path)
        last, problem = layout.parse_last(path)
        if not ckpts and last is None:
            sys.stderr.write(f"error: {path} is neither a checkpoint nor a run directory\n")
            return 2
        newest = layout.newest_complete(path)  # what `resume: auto` would take
        run = {
            "run_dir": str(path),
            "last_checkpoint": str(last) if last else None,
            "pointer_problem": problem,
            "resume_auto": str(newest) if newest else None,
            "checkpoints": [c.name for c in ckpts],
        }
        path = newest or (last if last is not None and last.is_dir() else ckpts[-1])
    info = inspect_checkpoint(path, checksums=not args.no_checksums)
    if run is not None:
        info["run"] = run
    if info["status"] == "complete" and not _screened(path, info):
        return 2
    if args.json:
        sys.stdout.write(json.dumps(info, indent=1) + "\n")
    else:
        sys.stdout.write(format_info(info))
    return 0 if info["status"] == "complete" else 1


def _read_meta(file: Path) -> dict[str, Any] | None:
    try:
        meta = layout.read_json(file)
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def _screened(path: Path, info: dict[str, Any]) -> bool:
    """Would every pickle-based file of `path` load without running code? Says why not."""
    from atlas.distributed.strategy import strategy_class
    from atlas.safeload import RefusedFileError, screen

    owner = info.get("strategy_format")
    try:
        screen(path, strategy_class(owner).pickle_globals if owner else ())
    except (layout.CheckpointError, RefusedFileError) as e:
        sys.stderr.write(f"error: {e}\n")
        return False
    return True


def format_info(info: dict[str, Any]) -> str:
    lines = []
    if "run" in info:
        r = info["run"]
        last = r["last_checkpoint"] or f"ignored: {r['pointer_problem']}"
        lines += [
            f"run dir      {r['run_dir']}",
            f"checkpoints  {', '.join(r['checkpoints'])}",
            f"last         {last}",
            f"resume auto  {r['resume_auto'] or 'none complete: a fresh start'}",
            "",
        ]
    status = info["status"] + (f" ({info['problem']})" if info["problem"] else "")
    lines += [f"{info['kind']:<12} {info['path']}", f"status       {status}"]
    if info["kind"] == "checkpoint":
        b = info["effective_batch"]
        best = (
            "none yet"
            if info["best_val_loss"] is None
            else (f"val loss {info['best_val_loss']:.6g} at step {info['best_step']}")
        )
        lines += [
            f"step         {info['step']}  (saved: {info['reason']}, {info['created']})",
            f"epoch        {info['epoch']}  ({info['batch_in_epoch']} micro-batches into it)",
            f"samples      {info['samples_seen']} seen",
            f"batch        {b.get('per_device')} per device x {b.get('world_size')} process(es) x "
            f"{b.get('grad_accum')} accumulation = {b.get('effective')} per optimizer step",
            f"world size   {info['world_size']}",
            f"best         {best}",
        ]
    lines.append("files")
    for f in info["files"]:
        lines.append(f"  {f['name']:<28} {_size(f['size']):>10}")
    lines.append(f"  {'total':<28} {_size(info['total_size']):>10}")
    return "\n".join(lines) + "\n"


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"
