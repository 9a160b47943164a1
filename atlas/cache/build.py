"""Building the feature cache (`atlas cache`) and opening it for training.

    build_feature_cache(cfg)   datasets -> key -> (hit: done) | run the frozen backbones over every
                               training sample (K augmented variants) and validation sample, and
                               every distinct instruction, into the store of that key
    open_cached_datasets(cfg, train, val, device)
                               the trainer's side: same key, the complete store or a
                               CacheMissError that names what changed and the command to run

Work split under torchrun: shard i belongs to rank i % world_size (see atlas.cache.store); every
rank loads only the images of its shards. Batches never straddle a shard, so a shard is committed
(atomically) as soon as its last batch is written, and an interrupted build resumes at the first
unfinished shard.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from atlas.cache.dataset import CachedFeatureDataset
from atlas.cache.identity import cache_key_inputs
from atlas.cache.keys import digest, explain_miss
from atlas.cache.store import (
    CacheMissError,
    FeatureStore,
    ShardRange,
    ShardWriter,
    StoreWriter,
    shard_ranges,
)
from atlas.config.schema import AtlasConfig
from atlas.data import build_datasets
from atlas.data.build import worker_init
from atlas.data.dataset import LiberoDataset
from atlas.data.normalization import Normalizer
from atlas.distributed.env import DistInfo, barrier, main_process_first
from atlas.models.config import policy_config
from atlas.models.language import resolve_language_dtype
from atlas.models.policy import AtlasVLAPolicy, build_policy
from atlas.runtime import resolve_precision, seed_everything

log = logging.getLogger(__name__)

STORE_DTYPES = {"float32": np.float32, "float16": np.float16}


def cache_root(cfg: AtlasConfig) -> Path:
    """`data.cache_dir`, or `<save_dir>/../feature_cache` (shared by the runs of one project)."""
    if cfg.data.cache_dir:
        return Path(cfg.data.cache_dir)
    return Path(cfg.checkpoint.save_dir).parent / "feature_cache"


def num_variants(cfg: AtlasConfig) -> int:
    """Augmented variants per training sample: K with augmentation on, else 1."""
    aug = cfg.data.augmentation
    if not aug.enabled:
        return 1
    if aug.num_cached_variants < 1:
        raise ValueError(
            "data.augmentation.num_cached_variants must be >= 1 with augmentation on "
            "(or turn data.augmentation.enabled off)"
        )
    return aug.num_cached_variants


def key_for(
    cfg: AtlasConfig, splits: dict[str, LiberoDataset], device: torch.device
) -> dict[str, Any]:
    """The key inputs of `cfg` on `device` (precision and language dtype resolved there)."""
    precision = resolve_precision(cfg.training.mixed_precision, device).name
    lang_dtype = str(resolve_language_dtype(cfg.model.language_encoder)).removeprefix("torch.")
    return cache_key_inputs(
        cfg,
        splits,
        precision=precision,
        language_dtype=lang_dtype,
        store_dtype=cfg.data.cache_dtype,
    )


def _splits(train: LiberoDataset, val: LiberoDataset | None) -> dict[str, LiberoDataset]:
    return {"train": train} if val is None or len(val) == 0 else {"train": train, "val": val}


# ------------------------------------------------------------------------------ training side


def open_cached_datasets(
    cfg: AtlasConfig, train: LiberoDataset, val: LiberoDataset | None, device: torch.device
) -> tuple[CachedFeatureDataset, CachedFeatureDataset | None]:
    """Wrap the LiberoDatasets with the features of the complete store of their key."""
    num_variants(cfg)  # a clear error for K < 1 before anything else
    splits = _splits(train, val)
    inputs = key_for(cfg, splits, device)
    root = cache_root(cfg)
    try:
        store = FeatureStore.open(root, digest(inputs))
    except CacheMissError as e:
        raise CacheMissError(
            f"{e}\n  {explain_miss(root, inputs)}\n  build it first: atlas cache --config CFG "
            "(with the same --set overrides as this run)"
        ) from None
    log.info("feature cache %s (%.1f KB per sample)", store.dir, _kb_per_sample(store))
    wrap = {
        name: CachedFeatureDataset(
            ds, store.split(name), store.instructions, store.language, cfg.training.seed
        )
        for name, ds in splits.items()
    }
    return wrap["train"], wrap.get("val")


def _kb_per_sample(store: FeatureStore) -> float:
    return store.split("train").bytes_per_sample() / 1024


# -------------------------------------------------------------------------------- build side


@dataclass
class BuildResult:
    """What `build_feature_cache` did: the store and how long this rank took."""

    directory: Path
    hit: bool  # the complete store already existed: nothing was computed
    samples: int  # (sample, variant) pairs computed by this rank
    seconds: float  # the whole call: data indexing, backbone loading, language table, features
    compute_seconds: float  # the feature loop alone (image loading + backbone + writing)
    bytes_per_sample: int  # stored bytes of one training sample, all variants


def build_feature_cache(
    cfg: AtlasConfig,
    dist: DistInfo,
    *,
    shard_size: int = 256,
    batch_size: int | None = None,
    progress: bool = True,
) -> BuildResult:
    """Compute and store the frozen-backbone features of every sample of `cfg` (see module doc).

    Call on every rank. The backbones run in eval mode, without autograd, under the autocast the
    trainer would use on this device, so online and cached training see the same numbers.
    """
    start = time.perf_counter()
    k = num_variants(cfg)
    seed_everything(cfg.training.seed)
    with main_process_first(dist):
        train, val, normalizer = build_datasets(cfg)
    splits = _splits(train, val)
    inputs = key_for(cfg, splits, dist.device)
    writer = StoreWriter(cache_root(cfg), inputs, digest(inputs))
    if writer.complete:
        log.info("feature cache %s is complete: nothing to do", writer.dir)
        return BuildResult(writer.dir, True, 0, 0.0, 0.0, _stored_bytes(writer.dir))
    policy = _frozen_policy(cfg, normalizer, dist.device)
    if dist.is_main:
        writer.write_language(train.tasks, _language_table(policy, train.tasks))
    policy.cache_instructions(train.tasks, release=True)  # the LM is not needed any more
    variants = {"train": k, "val": 1}  # validation is never augmented
    jobs = {}
    for name, ds in splits.items():
        ranges = shard_ranges(name, len(ds), shard_size)
        jobs[name] = (ds, writer.pending(ranges, dist.rank, dist.world_size), variants[name])
    loop_start = time.perf_counter()
    done = _run_jobs(writer, jobs, policy, cfg, dist, batch_size or cfg.data.batch_size, progress)
    compute = time.perf_counter() - loop_start
    barrier()
    if dist.is_main:
        sizes = {n: (len(ds), variants[n], shard_size) for n, ds in splits.items()}
        writer.finalize(sizes, {"store_dtype": cfg.data.cache_dtype})
        log.info("feature cache complete: %s", writer.dir)
    barrier()
    elapsed = time.perf_counter() - start
    return BuildResult(writer.dir, False, done, elapsed, compute, _stored_bytes(writer.dir))


def _stored_bytes(directory: Path) -> int:
    try:
        return FeatureStore(directory).split("train").bytes_per_sample()
    except (OSError, KeyError):
        return 0


def _frozen_policy(
    cfg: AtlasConfig, normalizer: Normalizer, device: torch.device
) -> AtlasVLAPolicy:
    """The policy with its backbones loaded, in eval mode on `device` (its frozen parts run)."""
    policy = build_policy(policy_config(cfg), normalizer).to(device)
    return policy.eval()


@torch.no_grad()
def _language_table(policy: AtlasVLAPolicy, instructions: Sequence[str]) -> dict[str, np.ndarray]:
    """pooled [T, D], tokens [T, Lt, D] (zero padded), mask [T, Lt] of every instruction."""
    feats = policy.language_encoder(list(instructions), policy.device)
    return {
        "pooled": feats.pooled.float().cpu().numpy(),
        "tokens": feats.tokens.float().cpu().numpy(),
        "mask": feats.mask.cpu().numpy(),
    }


def _run_jobs(
    writer: StoreWriter,
    jobs: dict[str, tuple[LiberoDataset, list[ShardRange], int]],
    policy: AtlasVLAPolicy,
    cfg: AtlasConfig,
    dist: DistInfo,
    batch_size: int,
    progress: bool,
) -> int:
    """Fill this rank's shards; jobs = {split: (dataset, pending shards, K)}. Returns the count
    of (sample, variant) pairs computed."""
    total = sum(r.size * k for _, ranges, k in jobs.values() for r in ranges)
    bar = tqdm(total=total, desc="features", unit="sample", disable=not (progress and dist.is_main))
    autocast = resolve_precision(cfg.training.mixed_precision, dist.device).autocast
    dtype = STORE_DTYPES[cfg.data.cache_dtype]
    for dataset, ranges, k in jobs.values():
        shard: ShardWriter | None = None
        try:
            for rng, offset, variant, images, last in _batches(dataset, ranges, k, batch_size, cfg):
                shard = shard or writer.open_shard(rng, k)
                with torch.no_grad(), autocast():
                    feats = policy.backbone_features(images)
                shard.write(offset, variant, _to_numpy(feats, dtype))
                bar.update(len(images))
                if last:  # the shard's final batch: make it durable now (resume point)
                    shard.commit()
                    shard = None
        except BaseException:
            if shard is not None:
                shard.abort()
            raise
    bar.close()
    return total


def _batches(
    dataset: LiberoDataset,
    ranges: list[ShardRange],
    k: int,
    batch_size: int,
    cfg: AtlasConfig,
) -> Iterator[tuple[ShardRange, int, int, torch.Tensor, bool]]:
    """(shard, row offset in it, variant, uint8 images [b, S, 3, H, W], last batch of the shard).

    One DataLoader (and one set of workers) for all the shards; no batch straddles two.
    """
    plan: list[tuple[ShardRange, list[tuple[int, int]], bool]] = []
    for rng in ranges:
        keys = [
            [(i, v) for i in range(a, min(a + batch_size, rng.end))]
            for v in range(k)
            for a in range(rng.start, rng.end, batch_size)
        ]
        plan += [(rng, batch, j == len(keys) - 1) for j, batch in enumerate(keys)]
    if not plan:
        return
    workers = cfg.data.num_workers
    if workers > 0:
        dataset.close()  # no open HDF5 handle may cross a fork
    loader = DataLoader(
        dataset,
        batch_sampler=[batch for _, batch, _ in plan],
        num_workers=workers,
        collate_fn=_stack_images,
        worker_init_fn=worker_init if workers > 0 else None,
    )
    for (rng, batch, last), images in zip(plan, loader):
        yield rng, batch[0][0] - rng.start, batch[0][1], images, last


def _stack_images(samples: list[dict[str, Any]]) -> torch.Tensor:
    return torch.stack([s["images"] for s in samples])


def _to_numpy(fields: dict[str, torch.Tensor], dtype: type) -> dict[str, np.ndarray]:
    out = {}
    for name, t in fields.items():
        value = t.float().cpu().numpy().astype(dtype, copy=False)
        if not np.isfinite(value).all():
            raise FloatingPointError(
                f"non-finite {name} features in {np.dtype(dtype).name}: the backbone overflowed "
                "(use data.cache_dtype: float32)"
            )
        out[name] = value
    return out
