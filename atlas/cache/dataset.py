"""`CachedFeatureDataset`: training samples whose backbone outputs come from the feature store.

A sample is the batch contract of docs/ARCHITECTURE.md WITHOUT "images" (no frame is read,
decoded, resized or augmented) plus what the frozen backbones would have produced, under the keys
the policy reads instead of running them (AtlasVLAPolicy.backbone_features / its language seam):

    vggt_tokens       float32 [S, T0, L*2C]  normalized, pooled VGGT tokens of the L layers
    vggt_pose_enc     float32 [S, 9]         (only with model.geometry.use_camera_pose)
    vggt_points       float32 [S, H/2, W/2, 3]  (only with model.geometry.use_point_features)
    language_pooled   float32 [D]
    language_tokens   float32 [Lt, D]        zero padded to the longest cached instruction
    language_mask     bool    [Lt]           True on real tokens

The policy trims collated language tokens to the batch's longest instruction, so shapes match
what the live language encoder returns.

Augmentation: variant v of a training sample is its augmentation at epoch v, as the online
dataset draws it from (seed, v, index). At epoch e, sample i reads variant
`select_variant(seed, e, i, K)`: a pure function, so every worker, rank and resumed run agrees.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from atlas.cache.store import SplitReader
from atlas.data.dataset import LiberoDataset, SampleDataset
from atlas.data.normalization import Normalizer

GEOMETRY_PREFIX = "vggt_"  # + a key of AtlasVLAPolicy.backbone_features
LANGUAGE_PREFIX = "language_"  # + pooled | tokens | mask
Key = int | tuple[int, int]


def select_variant(seed: int, epoch: int, index: int, num_variants: int) -> int:
    """The cached augmentation variant of sample `index` at `epoch`: uniform over [0, K)."""
    if num_variants <= 1:
        return 0
    # A hash, not a seeded generator: one call per sample, and no state to carry or resume.
    raw = hashlib.blake2b(f"{seed}:{epoch}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(raw, "little") % num_variants


def language_rows(table: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """The stored instruction table as tensors: pooled [T, D], tokens [T, Lt, D], mask [T, Lt]."""
    return {name: torch.from_numpy(np.ascontiguousarray(v)) for name, v in table.items()}


class CachedFeatureDataset(SampleDataset):
    """Wraps a LiberoDataset split and the matching split of a FeatureStore (same indexing).

    `base` supplies everything that is not an image (actions, masks, proprio, ids) through
    `base.lowdim_items`; `split` supplies the pooled geometry; `instructions` + `language` the
    per-instruction language features.
    """

    def __init__(
        self,
        base: LiberoDataset,
        split: SplitReader,
        instructions: Sequence[str],
        language: Mapping[str, np.ndarray],
        seed: int,
    ) -> None:
        if len(base) != len(split):
            raise ValueError(
                f"feature cache split has {len(split)} samples, the dataset {len(base)}: the cache "
                "is stale (its key should have caught this; rebuild with `atlas cache`)"
            )
        self.base, self.split, self.seed = base, split, seed
        self.row_of = {text: i for i, text in enumerate(instructions)}
        self.language = language_rows(language)

    # The attributes the trainer and loaders read from a LiberoDataset.
    @property
    def tasks(self) -> list[str]:
        return self.base.tasks

    @property
    def normalizer(self) -> Normalizer | None:
        return self.base.normalizer

    @property
    def num_variants(self) -> int:
        return self.split.num_variants

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: Key) -> dict[str, Any]:
        return self.__getitems__([key])[0]

    def __getitems__(self, keys: Sequence[Key]) -> list[dict[str, Any]]:
        parsed = [_parse_key(k, len(self)) for k in keys]
        samples = self.base.lowdim_items([i for i, _ in parsed])
        for sample, (index, epoch) in zip(samples, parsed):
            variant = select_variant(self.seed, epoch, index, self.num_variants)
            stored = self.split.read(index, variant)
            for name, value in stored.items():
                sample[GEOMETRY_PREFIX + name] = torch.from_numpy(value).float()
            for name, value in self._language(sample["instruction"]).items():
                sample[LANGUAGE_PREFIX + name] = value
        return samples

    def _language(self, instruction: str) -> dict[str, torch.Tensor]:
        row = self.row_of.get(instruction)
        if row is None:
            raise KeyError(
                f"instruction {instruction!r} is not in the feature cache (stale cache?)"
            )
        return {name: table[row] for name, table in self.language.items()}

    # DataLoader plumbing: HDF5 handles belong to the wrapped dataset.
    def close(self) -> None:
        self.base.close()

    def reset_handles(self) -> None:
        self.base.reset_handles()


def _parse_key(key: Any, length: int) -> tuple[int, int]:
    """int | (index, epoch) -> (non-negative index, epoch); a bare index is epoch 0."""
    if isinstance(key, (tuple, list)):
        index, epoch = int(key[0]), int(key[1])
    else:
        index, epoch = int(key), 0
    return (index + length if index < 0 else index), epoch
