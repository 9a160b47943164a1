"""The on-disk feature store: sharded `.npy` memory maps, written atomically, plus a JSON index.

One store holds the frozen-backbone features of one cache key (see `atlas.cache.keys`). Tree:

    <cache_dir>/<key[:16]>/
        key.json                      the inputs the key was computed from (to explain a miss)
        index.json                    written last, atomically: the store is complete iff present
        language/<field>.npy          one row per distinct instruction (order: index "instructions")
        <split>/shard_00000/          samples [0, shard_size) of the split, K variants each
            <field>.npy               [n, K, *field_shape], memory-mapped on read
            meta.json                 {start, end, fields}; written just before the rename
        <split>/shard_00001.tmp-.../  a shard being written; renamed to shard_00001/ when done

Resuming: a finished shard is a directory without `.tmp-`; it is never rewritten. A `.tmp-*`
directory is what an interrupted writer left behind and is deleted by the next writer of that
shard. Under torchrun, shard `i` belongs to rank `i % world_size`, so ranks never write the same
files; rank 0 writes the language table and, after a barrier, the index.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
INDEX_FILE = "index.json"
KEY_FILE = "key.json"
SHARD_META = "meta.json"
TMP_MARK = ".tmp-"


class CacheMissError(RuntimeError):
    """No complete store for this key: build it with `atlas cache` (the message says why)."""


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to a temporary sibling, fsync, rename: readers see old or new, never half."""
    tmp = path.with_name(f"{path.name}{TMP_MARK}{socket.gethostname()}-{os.getpid()}")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def shard_name(shard_id: int) -> str:
    return f"shard_{shard_id:05d}"


@dataclass(frozen=True)
class ShardRange:
    """Samples [start, end) of one split, stored in one shard directory."""

    split: str
    shard_id: int
    start: int
    end: int

    @property
    def size(self) -> int:
        return self.end - self.start


def shard_ranges(split: str, num_samples: int, shard_size: int) -> list[ShardRange]:
    """Cut [0, num_samples) into consecutive shards of `shard_size` (the last may be shorter)."""
    return [
        ShardRange(split, i, s, min(s + shard_size, num_samples))
        for i, s in enumerate(range(0, num_samples, shard_size))
    ]


# ------------------------------------------------------------------------------------ writing


class ShardWriter:
    """Fills one shard's memory maps in a temporary directory; `commit()` renames it into place.

    Arrays are allocated on the first `write` (their shapes come from the backbone's output), so
    a shard never has to fit in RAM: rows go straight into the page cache.
    """

    def __init__(self, final_dir: Path, rng: ShardRange, num_variants: int) -> None:
        self.final_dir, self.range, self.num_variants = final_dir, rng, num_variants
        self.tmp_dir = final_dir.with_name(
            f"{final_dir.name}{TMP_MARK}{socket.gethostname()}-{os.getpid()}"
        )
        shutil.rmtree(self.tmp_dir, ignore_errors=True)
        self.tmp_dir.mkdir(parents=True)
        self.arrays: dict[str, np.memmap] = {}
        self.written = np.zeros((rng.size, num_variants), dtype=bool)

    def write(self, offset: int, variant: int, fields: Mapping[str, np.ndarray]) -> None:
        """Store rows [offset, offset + b) of the shard for one variant: fields {name: [b, ...]}."""
        for name, value in fields.items():
            if name not in self.arrays:
                shape = (self.range.size, self.num_variants, *value.shape[1:])
                self.arrays[name] = np.lib.format.open_memmap(
                    self.tmp_dir / f"{name}.npy", mode="w+", dtype=value.dtype, shape=shape
                )
            self.arrays[name][offset : offset + len(value), variant] = value
        self.written[offset : offset + len(next(iter(fields.values()))), variant] = True

    def commit(self) -> None:
        """Flush, write meta.json, rename the directory into place (atomic on one filesystem)."""
        if not self.written.all():
            missing = int((~self.written).sum())
            raise RuntimeError(f"{self.final_dir}: {missing} (row, variant) pairs never written")
        meta = {"start": self.range.start, "end": self.range.end, "fields": {}}
        for name, arr in self.arrays.items():
            arr.flush()
            meta["fields"][name] = {"shape": list(arr.shape[2:]), "dtype": arr.dtype.str}
        self.arrays.clear()  # close the maps before the rename
        write_json_atomic(self.tmp_dir / SHARD_META, meta)
        try:
            os.rename(self.tmp_dir, self.final_dir)
        except OSError:
            if not (self.final_dir / SHARD_META).is_file():
                raise
            # Another writer finished this shard first: its copy is as good as ours.
            shutil.rmtree(self.tmp_dir, ignore_errors=True)

    def abort(self) -> None:
        self.arrays.clear()
        shutil.rmtree(self.tmp_dir, ignore_errors=True)


class StoreWriter:
    """Creates (or resumes) the store of one key under `root`."""

    def __init__(self, root: Path, key_inputs: Mapping[str, Any], digest: str) -> None:
        self.root, self.digest = Path(root), digest
        self.dir = self.root / digest[:16]
        self.dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.dir / KEY_FILE, {"digest": digest, "inputs": key_inputs})

    @property
    def complete(self) -> bool:
        return (self.dir / INDEX_FILE).is_file()

    def shard_dir(self, rng: ShardRange) -> Path:
        return self.dir / rng.split / shard_name(rng.shard_id)

    def is_done(self, rng: ShardRange) -> bool:
        return (self.shard_dir(rng) / SHARD_META).is_file()

    def pending(self, ranges: list[ShardRange], rank: int = 0, world: int = 1) -> list[ShardRange]:
        """This rank's shards (shard_id % world == rank) that are not finished yet."""
        return [r for r in ranges if r.shard_id % world == rank and not self.is_done(r)]

    def open_shard(self, rng: ShardRange, num_variants: int) -> ShardWriter:
        """A writer for `rng`; deletes what an interrupted writer of this shard left behind."""
        final = self.shard_dir(rng)
        for stale in final.parent.glob(f"{final.name}{TMP_MARK}*"):
            log.info("removing unfinished shard %s", stale)
            shutil.rmtree(stale, ignore_errors=True)
        return ShardWriter(final, rng, num_variants)

    def write_language(self, instructions: list[str], fields: Mapping[str, np.ndarray]) -> None:
        """The per-instruction table: fields {name: [T, ...]}, row t = instructions[t]."""
        tmp = self.dir / f"language{TMP_MARK}{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        for name, value in fields.items():
            np.save(tmp / f"{name}.npy", np.ascontiguousarray(value))
        write_json_atomic(tmp / SHARD_META, {"instructions": instructions})
        shutil.rmtree(self.dir / "language", ignore_errors=True)
        os.rename(tmp, self.dir / "language")

    def finalize(
        self, splits: Mapping[str, tuple[int, int, int]], extra: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Check every shard, write index.json. splits: {name: (num_samples, K, shard_size)}."""
        index: dict[str, Any] = {"format_version": FORMAT_VERSION, "key": self.digest, "splits": {}}
        total_bytes = 0
        for split, (num_samples, k, shard_size) in splits.items():
            entry, nbytes = self._check_split(split, num_samples, k, shard_size)
            index["splits"][split] = entry
            total_bytes += nbytes
        meta = json.loads((self.dir / "language" / SHARD_META).read_text())
        index["language"] = {"instructions": meta["instructions"]}
        index["bytes"] = total_bytes
        index.update(extra)
        write_json_atomic(self.dir / INDEX_FILE, index)
        return index

    def _check_split(self, split: str, n: int, k: int, shard_size: int) -> tuple[dict, int]:
        fields: dict | None = None
        shards, nbytes = [], 0
        for rng in shard_ranges(split, n, shard_size):
            if not self.is_done(rng):
                raise RuntimeError(f"{self.shard_dir(rng)} is missing; run `atlas cache` again")
            meta = json.loads((self.shard_dir(rng) / SHARD_META).read_text())
            if (meta["start"], meta["end"]) != (rng.start, rng.end) or fields not in (
                None,
                meta["fields"],
            ):
                raise RuntimeError(f"{self.shard_dir(rng)} does not match its neighbours")
            fields = meta["fields"]
            shards.append(shard_name(rng.shard_id))
            nbytes += sum(f.stat().st_size for f in self.shard_dir(rng).glob("*.npy"))
        entry = {
            "num_samples": n,
            "num_variants": k,
            "shard_size": shard_size,
            "fields": fields or {},
            "shards": shards,
            "bytes": nbytes,
        }
        return entry, nbytes


# ------------------------------------------------------------------------------------ reading


class SplitReader:
    """Random access to one split: `read(index, variant)` -> {field: array of its field shape}.

    Shards are memory-mapped on first use, in the process that reads them: a reader pickled into
    a DataLoader worker arrives without open maps (they are never copied between processes).
    """

    def __init__(self, directory: Path, entry: Mapping[str, Any]) -> None:
        self.dir = Path(directory)
        self.num_samples: int = entry["num_samples"]
        self.num_variants: int = entry["num_variants"]
        self.shard_size: int = entry["shard_size"]
        self.fields: dict[str, dict] = dict(entry["fields"])
        self.shards: list[str] = list(entry["shards"])
        self._maps: dict[int, dict[str, np.ndarray]] = {}

    def __len__(self) -> int:
        return self.num_samples

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_maps"] = {}
        return state

    def _shard(self, shard_id: int) -> dict[str, np.ndarray]:
        maps = self._maps.get(shard_id)
        if maps is None:
            path = self.dir / self.shards[shard_id]
            maps = {
                name: np.load(path / f"{name}.npy", mmap_mode="r", allow_pickle=False)
                for name in self.fields
            }
            self._maps[shard_id] = maps
        return maps

    def read(self, index: int, variant: int = 0) -> dict[str, np.ndarray]:
        """Copies of the stored fields of sample `index`, variant `variant` (0 <= variant < K)."""
        if not 0 <= index < self.num_samples:
            raise IndexError(f"sample {index} out of range [0, {self.num_samples})")
        if not 0 <= variant < self.num_variants:
            raise IndexError(f"variant {variant} out of range [0, {self.num_variants})")
        maps = self._shard(index // self.shard_size)
        row = index % self.shard_size
        return {name: np.array(arr[row, variant]) for name, arr in maps.items()}

    def bytes_per_sample(self) -> int:
        """Stored bytes of one sample, all K variants together."""
        per_variant = sum(
            int(np.prod(f["shape"], dtype=np.int64)) * np.dtype(f["dtype"]).itemsize
            for f in self.fields.values()
        )
        return per_variant * self.num_variants


class FeatureStore:
    """A complete store, opened read-only: `.split(name)`, `.language` and `.index`."""

    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory)
        self.index: dict[str, Any] = json.loads((self.dir / INDEX_FILE).read_text())
        if self.index.get("format_version") != FORMAT_VERSION:
            raise CacheMissError(
                f"{self.dir} has cache format {self.index.get('format_version')}, this code "
                f"reads {FORMAT_VERSION}: rebuild it with `atlas cache`"
            )
        self._language: dict[str, np.ndarray] | None = None

    @classmethod
    def open(cls, root: str | Path, digest: str) -> FeatureStore:
        """The complete store of `digest` under `root`, or CacheMissError."""
        directory = Path(root) / digest[:16]
        if not (directory / INDEX_FILE).is_file():
            raise CacheMissError(f"no complete feature cache at {directory}")
        store = cls(directory)
        if store.index.get("key") != digest:
            raise CacheMissError(f"{directory} holds key {store.index.get('key')}, not {digest}")
        return store

    @property
    def splits(self) -> list[str]:
        return sorted(self.index["splits"])

    def split(self, name: str) -> SplitReader:
        if name not in self.index["splits"]:
            raise KeyError(f"split {name!r} not cached in {self.dir} (has {self.splits})")
        return SplitReader(self.dir / name, self.index["splits"][name])

    @property
    def instructions(self) -> list[str]:
        return list(self.index["language"]["instructions"])

    @property
    def language(self) -> dict[str, np.ndarray]:
        """The per-instruction table {field: [T, ...]} (small: loaded into memory once)."""
        if self._language is None:
            self._language = {
                p.stem: np.load(p, allow_pickle=False)
                for p in sorted((self.dir / "language").glob("*.npy"))
            }
        return self._language


def iter_key_files(root: str | Path) -> Iterator[tuple[Path, dict]]:
    """(store dir, key.json contents) of every store under `root`, newest first."""
    root = Path(root)
    if not root.is_dir():
        return
    files = sorted(root.glob(f"*/{KEY_FILE}"), key=lambda p: p.stat().st_mtime, reverse=True)
    for path in files:
        try:
            yield path.parent, json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
