"""What the trainer builds before its first step: seeds, the banner, data, policy, loaders.

Kept out of trainer.py so the loop reads on its own. Every function here runs on every rank;
work with side effects on shared files (synthetic data, statistics) runs on rank 0 first.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader

from atlas.cache import open_cached_datasets
from atlas.config.schema import AtlasConfig
from atlas.data import build_dataloader, build_datasets
from atlas.data.dataset import SampleDataset
from atlas.data.normalization import Normalizer
from atlas.distributed.env import DistInfo, main_process_first
from atlas.distributed.sampler import ResumableSampler
from atlas.models.config import policy_config
from atlas.models.policy import AtlasVLAPolicy, build_policy

log = logging.getLogger(__name__)


def log_banner(dist: DistInfo) -> None:
    """The start banner, one message so its lines stay together (as the documents show it)."""
    log.info(
        "Training setup:\n  Distributed: %s\n  World size: %d\n  Rank: %d, Local rank: %d\n"
        "  Device: %s",
        dist.distributed,
        dist.world_size,
        dist.rank,
        dist.local_rank,
        dist.device,
    )


@dataclass
class TrainingData:
    """Datasets, loaders and the normalizer of one run."""

    train_set: SampleDataset  # a LiberoDataset, or its CachedFeatureDataset (feature cache)
    val_set: SampleDataset | None
    normalizer: Normalizer
    sampler: ResumableSampler  # over train_set
    train_loader: DataLoader
    val_loader: DataLoader | None


def build_training_data(cfg: AtlasConfig, dist: DistInfo) -> TrainingData:
    """Datasets (rank 0 first: it may generate the synthetic set or write statistics) + loaders.

    Training batches come from a `ResumableSampler` (distributed, reshuffled per epoch, able to
    start mid-epoch). Validation is sharded without padding (rank r takes every world_size-th
    sample), so each held-out sample is counted exactly once in the reduced metrics.
    """
    with main_process_first(dist):
        train_set, val_set, normalizer = build_datasets(cfg)
    if cfg.data.use_feature_cache:  # same indexing, backbone outputs read from `atlas cache`
        train_set, val_set = open_cached_datasets(cfg, train_set, val_set, dist.device)
    sampler = ResumableSampler(
        len(train_set), dist, shuffle=True, seed=cfg.training.seed, drop_last=False
    )
    train_loader = build_dataloader(train_set, cfg, sampler, train=True)
    val_loader = None
    if val_set is not None and len(val_set) > 0:
        shard = list(range(dist.rank, len(val_set), dist.world_size))
        val_loader = build_dataloader(val_set, cfg, shard, train=False)
    log.info(
        "Data: %d train samples, %d validation samples, %d tasks",
        len(train_set),
        len(val_set) if val_set is not None else 0,
        len(train_set.tasks),
    )
    return TrainingData(train_set, val_set, normalizer, sampler, train_loader, val_loader)


def build_model(cfg: AtlasConfig, normalizer: Normalizer, device: torch.device) -> AtlasVLAPolicy:
    """The policy on `device` (identical on every rank: built right after seeding)."""
    # Training from the feature cache never loads the frozen backbones (batches carry their output).
    policy = build_policy(policy_config(cfg), normalizer, backbones=not cfg.data.use_feature_cache)
    counts = policy.parameter_counts()
    for name, c in counts.items():
        log.info("Module %-16s %12d params, %12d trainable", name, c["total"], c["trainable"])
    trainable = sum(c["trainable"] for c in counts.values())
    total = sum(c["total"] for c in counts.values())
    share = 100 * trainable / max(total, 1)
    log.info("Policy: %d parameters, %d trainable (%.2f%%)", total, trainable, share)
    return policy.to(device)
