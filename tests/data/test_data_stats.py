"""Statistics equal numpy's, the normalizer inverts exactly, and `build_datasets` wires it up."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from atlas.data.errors import DataError
from atlas.data.libero_hdf5 import build_index
from atlas.data.normalization import Normalizer, load_stats
from atlas.data.stats import StreamingStats, compute_stats


def _numpy_stats(x: np.ndarray) -> dict[str, np.ndarray]:
    return {
        "mean": x.mean(0),
        "std": x.std(0),
        "min": x.min(0),
        "max": x.max(0),
        "q01": np.quantile(x, 0.01, axis=0),
        "q99": np.quantile(x, 0.99, axis=0),
    }


def test_stats_equal_numpy_on_the_synthetic_data(synth_dir: Path) -> None:
    index = build_index(synth_dir, ["agentview_rgb"])
    stats = compute_stats(index)
    for key, attr in (("action", "actions"), ("proprio", "proprio")):
        data = np.concatenate([getattr(ep, attr) for ep in index.episodes]).astype(np.float64)
        for name, expected in _numpy_stats(data).items():
            np.testing.assert_allclose(stats[key][name], expected, atol=1e-6, err_msg=name)
    assert stats["num_samples"] == index.num_samples and stats["quantiles"] == "exact"


def test_streaming_quantiles_are_close_beyond_the_reservoir() -> None:
    rng = np.random.default_rng(0)
    data = np.concatenate([rng.normal(0, 1, (30_000, 3)), rng.uniform(-1, 1, (30_000, 3))], 1)
    acc = StreamingStats(6, capacity=5_000)
    for chunk in np.array_split(data, 97):  # uneven chunks, like episodes
        acc.update(chunk)
    got, want = acc.result(), _numpy_stats(data)
    for name in ("mean", "std", "min", "max"):
        np.testing.assert_allclose(got[name], want[name], atol=1e-6, rtol=0, err_msg=name)
    for name, q in (("q01", 0.01), ("q99", 0.99)):
        # Judge the estimate by its rank: a reservoir of k rows has a rank error of about
        # sqrt(q (1 - q) / k) = 0.0014 here; allow three of those.
        rank = (data <= np.asarray(got[name])).mean(axis=0)
        np.testing.assert_allclose(rank, q, atol=0.0045, err_msg=name)
        np.testing.assert_allclose(got[name], want[name], atol=0.15, err_msg=name)
    assert not acc.exact_quantiles


def _stats(**overrides: list[float]) -> dict:
    rng = np.random.default_rng(1)
    stats = {}
    for key, dim in (("action", 7), ("proprio", 8)):
        x = rng.normal(0, 2, (500, dim))
        x[:, 3] = 0.5  # a constant dimension
        stats[key] = {k: [float(v) for v in a] for k, a in _numpy_stats(x).items()}
    stats["num_samples"] = 500
    return stats


@pytest.mark.parametrize("mode", ["q99", "mean_std", "none"])
def test_normalizer_round_trip_numpy_and_torch(mode: str) -> None:
    norm = Normalizer(_stats(), mode)
    x = np.random.default_rng(2).normal(0, 2, (4, 3, 7)).astype(np.float32)
    x[..., 3] = 0.5
    y = norm.normalize_action(x)
    assert y.dtype == np.float32 and np.isfinite(y).all()
    np.testing.assert_allclose(norm.unnormalize_action(y), x, atol=1e-5)
    t = norm.normalize_proprio(torch.ones(2, 8, dtype=torch.float64))
    assert t.dtype == torch.float64
    torch.testing.assert_close(norm.unnormalize_proprio(t), torch.ones(2, 8, dtype=torch.float64))
    if mode != "none":
        np.testing.assert_allclose(y[..., 3], 0.0, atol=1e-6)  # constant dim guarded, not inf
    again = Normalizer.from_dict(json.loads(json.dumps(norm.to_dict())))
    np.testing.assert_array_equal(again.normalize_action(x), y)


def test_q99_maps_the_quantiles_to_unit_range() -> None:
    stats = _stats()
    norm = Normalizer(stats, "q99")
    q = np.array([stats["action"]["q01"], stats["action"]["q99"]], dtype=np.float64)
    y = norm.normalize_action(q)
    np.testing.assert_allclose(np.delete(y, 3, axis=1), [[-1] * 6, [1] * 6], atol=1e-9)


def test_bad_stats_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        load_stats(tmp_path / "missing.json")
    bad = _stats()
    bad["action"]["q99"] = [1.0, 2.0]
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(DataError, match=r"action\.q99"):
        load_stats(tmp_path / "bad.json")
