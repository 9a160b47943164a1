"""The cache key: everything the cached features are a function of, hashed into one digest.

Features are a pure function of (dataset files, which samples, preprocessing, backbone weights,
backbone config, precision). `key_inputs` gathers each of these as plain JSON; `digest` hashes
the canonical JSON with SHA-256; the store lives under `<cache_dir>/<digest[:16]>`. Change any
input and the digest changes, so a store is found only when it is still valid: stale features
cannot be read. When no store matches, `explain_miss` compares against the stores that exist and
names the inputs that changed (e.g. `dataset.files[3].mtime_ns`).

Files are identified by (resolved path, size, mtime_ns): cheap for 100 GB of HDF5, and any write
or `touch` changes it. A randomly initialised backbone (no checkpoint file) is identified by its
recipe (preset, seed, torch version), since the point of the cache is never to build it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from atlas.cache.store import iter_key_files

KEY_VERSION = 1  # bump when what a feature means changes (e.g. a new pooling)


def file_identity(path: str | Path) -> dict[str, Any]:
    """{"path", "size", "mtime_ns"} of a file; a missing file is an error (nothing to key on)."""
    p = Path(path).expanduser().resolve()
    st = p.stat()
    return {"path": str(p), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def folder_identity(path: str | Path, patterns: Iterable[str] = ("*",)) -> list[dict[str, Any]]:
    """file_identity of every file of `path` matching `patterns` (top level, sorted by name)."""
    folder = Path(path).expanduser()
    files = sorted({f for pat in patterns for f in folder.glob(pat) if f.is_file()})
    return [file_identity(f) for f in files]


def canonical_json(obj: Any) -> str:
    """Deterministic JSON (sorted keys, no whitespace): the bytes a digest is taken of."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_jsonable)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (tuple, set)):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot put {type(obj).__name__} into a cache key")


def digest(inputs: Mapping[str, Any]) -> str:
    """SHA-256 hex digest of the canonical JSON of `inputs` (with the key format version)."""
    payload = canonical_json({"key_version": KEY_VERSION, **inputs}).encode()
    return hashlib.sha256(payload).hexdigest()


def hash_arrays(arrays: Sequence[np.ndarray | Sequence[Any]]) -> str:
    """SHA-256 of a sequence of arrays (dtype, shape and bytes each): e.g. a split's sample ids."""
    h = hashlib.sha256()
    for a in arrays:
        arr = np.ascontiguousarray(np.asarray(a))
        if arr.dtype.kind in "OU":  # strings: hash their text, not object pointers
            h.update(canonical_json(arr.tolist()).encode())
        else:
            h.update(f"{arr.dtype.str}{arr.shape}".encode())
            h.update(arr.tobytes())
    return h.hexdigest()


# ------------------------------------------------------------------------------ explaining


def diff_inputs(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted paths where two key-input trees differ, e.g. ["backbone.vggt.weights.mtime_ns"]."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for k in sorted(set(old) | set(new)):
            path = f"{prefix}.{k}" if prefix else str(k)
            if k not in old or k not in new:
                out.append(f"{path} ({'added' if k not in old else 'removed'})")
            else:
                out.extend(diff_inputs(old[k], new[k], path))
        return out
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        pairs = enumerate(zip(old, new))
        return [p for i, (a, b) in pairs for p in diff_inputs(a, b, f"{prefix}[{i}]")]
    if isinstance(old, list) and isinstance(new, list):
        return [f"{prefix} (length {len(old)} -> {len(new)})"]
    return [] if old == new else [f"{prefix}: {_short(old)} -> {_short(new)}"]


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def explain_miss(root: str | Path, inputs: Mapping[str, Any], limit: int = 8) -> str:
    """Why no store under `root` matches `inputs`: what differs in the closest existing store."""
    best: tuple[int, Path, list[str]] | None = None
    for directory, stored in iter_key_files(root):
        changes = diff_inputs(stored.get("inputs", {}), dict(inputs))
        if best is None or len(changes) < best[0]:
            best = (len(changes), directory, changes)
    if best is None:
        return f"no feature cache under {root} yet"
    _, directory, changes = best
    if not changes:
        return f"{directory} has the same key but is incomplete (interrupted build?)"
    shown = "\n    ".join(changes[:limit])
    more = f"\n    ... and {len(changes) - limit} more" if len(changes) > limit else ""
    return f"closest cache {directory} differs in:\n    {shown}{more}"
