"""The frozen-feature cache: precompute what the frozen backbones give the policy, train from it.

    atlas cache --config CFG         build it (atlas.cache.cli -> build.build_feature_cache)
    data.use_feature_cache: true     train from it (build.open_cached_datasets)

Modules: `store` (sharded memory-mapped .npy + JSON index, atomic shards, resume), `keys` (hashing
and explaining misses), `identity` (what a config's features depend on), `dataset`
(`CachedFeatureDataset`), `build` (the builder and the trainer's entry point), `cli`.
"""

from atlas.cache.build import build_feature_cache, cache_root, open_cached_datasets
from atlas.cache.dataset import CachedFeatureDataset, select_variant
from atlas.cache.store import CacheMissError, FeatureStore

__all__ = [
    "CacheMissError",
    "CachedFeatureDataset",
    "FeatureStore",
    "build_feature_cache",
    "cache_root",
    "open_cached_datasets",
    "select_variant",
]
