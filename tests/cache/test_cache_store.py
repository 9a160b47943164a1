"""The feature store with synthetic arrays: round trip, atomic shards, resume, ranks, keys."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from atlas.cache.keys import diff_inputs, digest, explain_miss, file_identity, hash_arrays
from atlas.cache.store import (
    CacheMissError,
    FeatureStore,
    StoreWriter,
    shard_ranges,
)

INPUTS = {"dataset": {"files": [{"path": "/x.hdf5", "size": 10, "mtime_ns": 1}]}, "b": 1}


def _features(n: int, k: int) -> dict[str, np.ndarray]:
    """Deterministic fake features [n, k, ...] (value encodes sample and variant)."""
    idx = np.arange(n, dtype=np.float32)[:, None, None, None]
    var = np.arange(k, dtype=np.float32)[None, :, None, None]
    tokens = idx * 10 + var + np.zeros((n, k, 2, 3), np.float32)
    return {"tokens": tokens, "pose": tokens[..., 0, :2].astype(np.float16)}


def _write_split(w: StoreWriter, split: str, n: int, k: int, size: int, rank=0, world=1) -> int:
    feats = _features(n, k)
    done = 0
    for rng in w.pending(shard_ranges(split, n, size), rank, world):
        shard = w.open_shard(rng, k)
        for v in range(k):
            # Two writes per variant: rows arrive in batches.
            mid = rng.start + rng.size // 2
            for a, b in ((rng.start, mid), (mid, rng.end)):
                if b > a:
                    shard.write(a - rng.start, v, {f: x[a:b, v] for f, x in feats.items()})
        shard.commit()
        done += 1
    return done


def _build(root: Path, n=10, k=3, size=4, key=INPUTS) -> FeatureStore:
    w = StoreWriter(root, key, digest(key))
    _write_split(w, "train", n, k, size)
    _write_split(w, "val", 3, 1, size)
    w.write_language(["a", "b"], {"pooled": np.eye(2, dtype=np.float32)})
    w.finalize({"train": (n, k, size), "val": (3, 1, size)}, {"note": "x"})
    return FeatureStore.open(root, digest(key))


def test_round_trip(tmp_path: Path) -> None:
    store = _build(tmp_path)
    train = store.split("train")
    assert len(train) == 10 and train.num_variants == 3 and store.splits == ["train", "val"]
    feats = _features(10, 3)
    for i in range(10):
        for v in range(3):
            got = train.read(i, v)
            np.testing.assert_array_equal(got["tokens"], feats["tokens"][i, v])
            assert got["pose"].dtype == np.float16
    assert store.instructions == ["a", "b"]
    np.testing.assert_array_equal(store.language["pooled"], np.eye(2))
    assert train.bytes_per_sample() == 3 * (2 * 3 * 4 + 2 * 2)
    assert store.index["note"] == "x" and store.index["bytes"] > 0
    with pytest.raises(IndexError):
        train.read(10, 0)
    with pytest.raises(IndexError):
        train.read(0, 3)


def test_reader_pickles_without_maps(tmp_path: Path) -> None:
    train = _build(tmp_path).split("train")
    train.read(0)
    assert train._maps
    clone = pickle.loads(pickle.dumps(train))
    assert clone._maps == {}
    np.testing.assert_array_equal(clone.read(5, 1)["tokens"], train.read(5, 1)["tokens"])


def test_missing_key_is_a_miss(tmp_path: Path) -> None:
    with pytest.raises(CacheMissError):
        FeatureStore.open(tmp_path, digest({"other": 1}))


def test_incomplete_store_is_a_miss(tmp_path: Path) -> None:
    """Shards without index.json (an interrupted build) are never read."""
    w = StoreWriter(tmp_path, INPUTS, digest(INPUTS))
    _write_split(w, "train", 10, 1, 4)
    with pytest.raises(CacheMissError):
        FeatureStore.open(tmp_path, digest(INPUTS))
    assert "incomplete" in explain_miss(tmp_path, INPUTS)


def test_resume_keeps_finished_shards(tmp_path: Path) -> None:
    w = StoreWriter(tmp_path, INPUTS, digest(INPUTS))
    ranges = shard_ranges("train", 10, 4)
    assert [(r.start, r.end) for r in ranges] == [(0, 4), (4, 8), (8, 10)]
    # First run: shard 0 finished, shard 1 interrupted half-way (left as a .tmp- directory).
    feats = _features(10, 1)
    s0 = w.open_shard(ranges[0], 1)
    s0.write(0, 0, {f: x[0:4, 0] for f, x in feats.items()})
    s0.commit()
    s1 = w.open_shard(ranges[1], 1)
    s1.write(0, 0, {f: x[4:6, 0] for f, x in feats.items()})
    with pytest.raises(RuntimeError, match="never written"):
        s1.commit()
    assert any(".tmp-" in p.name for p in (tmp_path / w.dir.name / "train").iterdir())
    mtime = (w.shard_dir(ranges[0]) / "tokens.npy").stat().st_mtime_ns
    # Second run: only the unfinished shards are pending; the stale tmp dir is cleaned.
    w2 = StoreWriter(tmp_path, INPUTS, digest(INPUTS))
    assert [r.shard_id for r in w2.pending(ranges)] == [1, 2]
    assert _write_split(w2, "train", 10, 1, 4) == 2
    assert (w.shard_dir(ranges[0]) / "tokens.npy").stat().st_mtime_ns == mtime
    assert not any(".tmp-" in p.name for p in (w.dir / "train").iterdir())
    w2.write_language([], {})
    w2.finalize({"train": (10, 1, 4)}, {})
    np.testing.assert_array_equal(
        FeatureStore.open(tmp_path, digest(INPUTS)).split("train").read(9)["tokens"],
        feats["tokens"][9, 0],
    )


def test_finalize_refuses_missing_shards(tmp_path: Path) -> None:
    w = StoreWriter(tmp_path, INPUTS, digest(INPUTS))
    _write_split(w, "train", 10, 1, 4, rank=0, world=2)  # rank 1's shard never written
    w.write_language([], {})
    with pytest.raises(RuntimeError, match="missing"):
        w.finalize({"train": (10, 1, 4)}, {})


def test_ranks_write_disjoint_shards(tmp_path: Path) -> None:
    w = StoreWriter(tmp_path, INPUTS, digest(INPUTS))
    ranges = shard_ranges("train", 10, 2)
    mine = [{r.shard_id for r in w.pending(ranges, rank, 3)} for rank in range(3)]
    assert set().union(*mine) == set(range(5)) and sum(map(len, mine)) == 5
    for rank in range(3):
        _write_split(w, "train", 10, 2, 2, rank=rank, world=3)
    w.write_language([], {})
    w.finalize({"train": (10, 2, 2)}, {})
    reader = FeatureStore.open(tmp_path, digest(INPUTS)).split("train")
    assert reader.read(7, 1)["tokens"][0, 0] == 71.0


def test_digest_and_diff() -> None:
    other = {**INPUTS, "b": 2}
    assert digest(INPUTS) == digest(dict(reversed(list(INPUTS.items()))))
    assert digest(INPUTS) != digest(other)
    assert diff_inputs(INPUTS, other) == ["b: 1 -> 2"]
    changed = {"dataset": {"files": [{"path": "/x.hdf5", "size": 10, "mtime_ns": 2}]}, "b": 1}
    assert diff_inputs(INPUTS, changed) == ["dataset.files[0].mtime_ns: 1 -> 2"]
    assert hash_arrays([np.arange(3)]) != hash_arrays([np.arange(3, dtype=np.int32)])
    assert hash_arrays([np.array(["a", "b"])]) == hash_arrays([["a", "b"]])


def test_explain_miss_names_the_change(tmp_path: Path) -> None:
    _build(tmp_path)
    changed = {"dataset": {"files": [{"path": "/x.hdf5", "size": 11, "mtime_ns": 1}]}, "b": 1}
    assert "dataset.files[0].size: 10 -> 11" in explain_miss(tmp_path, changed)
    assert "no feature cache" in explain_miss(tmp_path / "nothing", changed)


def test_file_identity_sees_touch(tmp_path: Path) -> None:
    f = tmp_path / "a.hdf5"
    f.write_bytes(b"123")
    before = file_identity(f)
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert file_identity(f) != before and file_identity(f)["size"] == 3
