"""Action and proprio normalization, built from the statistics JSON of `atlas data stats`.

Modes (data.normalization):
  q99       [q01, q99] -> [-1, 1] per dimension (openpi / OpenVLA style; outliers land slightly
            outside, they are not clipped so that unnormalize is the exact inverse)
  mean_std  (x - mean) / std
  none      identity
Near-constant dimensions (q99 - q01 < 1e-4, or std < 1e-6) would blow up to huge values; they are
guarded by a unit scale, so they normalize to x - centre (about 0) and invert exactly.

The normalizer travels with the model (the trainer stores `to_dict()` in checkpoints), so
evaluation unnormalizes with the statistics the policy was trained with.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
import torch

from atlas.data.errors import DataError

NormMode = Literal["q99", "mean_std", "none"]
STAT_FIELDS = ("mean", "std", "min", "max", "q01", "q99")
DIMS = {"action": 7, "proprio": 8}
RANGE_EPS = 1e-4  # q99 mode: a q01..q99 range below this is treated as constant
STD_EPS = 1e-6  # mean_std mode: a std below this is treated as constant

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


class Normalizer:
    """Maps actions [..., 7] and proprio [..., 8] to and from the normalized space.

    Accepts numpy arrays or torch tensors with any leading dims; a tensor keeps its device and
    dtype.
    """

    def __init__(self, stats: dict[str, Any], mode: NormMode = "q99"):
        if mode not in ("q99", "mean_std", "none"):
            raise ValueError(f"normalization mode must be q99 | mean_std | none, got {mode!r}")
        check_stats(stats, "<stats>")
        self.stats, self.mode = stats, mode
        self._affine = {key: _affine(stats[key], mode) for key in DIMS}

    def normalize_action(self, x: ArrayT) -> ArrayT:
        return self._apply("action", x, inverse=False)

    def unnormalize_action(self, x: ArrayT) -> ArrayT:
        return self._apply("action", x, inverse=True)

    def normalize_proprio(self, x: ArrayT) -> ArrayT:
        return self._apply("proprio", x, inverse=False)

    def unnormalize_proprio(self, x: ArrayT) -> ArrayT:
        return self._apply("proprio", x, inverse=True)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for checkpoints / normalization.json: {"mode": ..., "stats": {...}}."""
        return {"mode": self.mode, "stats": self.stats}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Normalizer:
        return cls(data["stats"], data.get("mode", "q99"))

    def __repr__(self) -> str:
        return f"Normalizer(mode={self.mode!r}, num_samples={self.stats.get('num_samples')})"

    def _apply(self, key: str, x: ArrayT, inverse: bool) -> ArrayT:
        center, scale = self._affine[key]
        if x.shape[-1] != DIMS[key]:
            raise ValueError(f"{key} must have {DIMS[key]} values in the last dim, got {x.shape}")
        if isinstance(x, torch.Tensor):
            dtype = x.dtype if x.is_floating_point() else torch.float32
            c = torch.as_tensor(center, dtype=dtype, device=x.device)
            s = torch.as_tensor(scale, dtype=dtype, device=x.device)
            x = x.to(dtype)
        else:
            x = np.asarray(x)
            x = x if np.issubdtype(x.dtype, np.floating) else x.astype(np.float32)
            c, s = center.astype(x.dtype), scale.astype(x.dtype)
        return x * s + c if inverse else (x - c) / s


def _affine(stats: dict[str, list[float]], mode: NormMode) -> tuple[np.ndarray, np.ndarray]:
    """(centre, scale) with normalized = (x - centre) / scale, constant dims guarded."""
    get = {k: np.asarray(stats[k], dtype=np.float64) for k in STAT_FIELDS}
    if mode == "none":
        return np.zeros_like(get["mean"]), np.ones_like(get["mean"])
    if mode == "q99":
        center, scale = (get["q99"] + get["q01"]) / 2, (get["q99"] - get["q01"]) / 2
        scale = np.where(scale < RANGE_EPS / 2, 1.0, scale)
    else:
        center, scale = get["mean"], np.where(get["std"] < STD_EPS, 1.0, get["std"])
    return center, scale


def check_stats(stats: Any, source: str) -> None:
    """Raise a DataError unless `stats` has every field of both groups with the right length."""
    if not isinstance(stats, dict):
        raise DataError(source, "statistics must be a JSON object")
    for key, dim in DIMS.items():
        group = stats.get(key)
        if not isinstance(group, dict):
            raise DataError(source, "missing statistics group", key=key)
        for name in STAT_FIELDS:
            values = group.get(name)
            if not isinstance(values, list) or len(values) != dim:
                raise DataError(source, f"expected a list of {dim} numbers", key=f"{key}.{name}")
            if not np.isfinite(np.asarray(values, dtype=np.float64)).all():
                raise DataError(source, "NaN or inf in the statistics", key=f"{key}.{name}")


def load_stats(path: str | Path) -> dict[str, Any]:
    """Read and check a statistics JSON written by `atlas data stats`."""
    path = Path(path)
    if not path.is_file():
        raise DataError(str(path), "statistics file not found (make one with `atlas data stats`)")
    try:
        stats = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DataError(str(path), f"not valid JSON ({e})") from None
    check_stats(stats, str(path))
    return stats


def save_stats(stats: dict[str, Any], path: str | Path) -> None:
    """Write statistics JSON atomically (temporary sibling, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(stats, indent=2) + "\n")
    tmp.replace(path)
