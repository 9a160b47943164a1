"""A distributed sampler that can start in the middle of an epoch without reading what it skips.

`ResumableSampler` shards indices across ranks exactly like `torch.utils.data.DistributedSampler`
(same permutation for the same `seed + epoch`, same padding or truncation, same per-rank stride),
and adds two things a resumable run needs:

* it yields `(index, epoch)` tuples, so the dataset seeds augmentation from (seed, epoch, index)
  and a sample looks the same whatever the number of workers and whether the run was resumed;
* `set_epoch(epoch, start_batch, batch_size)` drops the first `start_batch * batch_size` indices
  of this rank's shard. The permutation is a pure function of (seed, epoch), so the skipped
  samples are never loaded: resuming at batch 900 of an epoch costs nothing.

The data position itself lives in `TrainProgress.batch_in_epoch` (micro-batches consumed), not in
the sampler: with `num_workers > 0` the DataLoader draws indices ahead of what the trainer has
consumed, so only the trainer knows how far the run really got.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import Sampler

from atlas.distributed.env import DistInfo

log = logging.getLogger(__name__)


class ResumableSampler(Sampler[tuple[int, int]]):
    """Per-rank shard of a (seed, epoch)-seeded permutation, yielding `(index, epoch)`.

    `len(sampler)` is the number of indices the next iteration yields (the shard minus the skipped
    start); `num_samples_per_rank` is the full shard, what sizes an epoch.
    """

    def __init__(
        self,
        num_samples: int,
        dist: DistInfo,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
    ) -> None:
        if num_samples < 1:
            raise ValueError("ResumableSampler needs a non-empty dataset")
        self.num_samples = num_samples
        self.rank = dist.rank
        self.world_size = dist.world_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.epoch = 0
        self.start_index = 0
        # DistributedSampler's arithmetic: truncate to a multiple of the world, or pad up to one.
        if drop_last and num_samples % self.world_size != 0:
            per_rank = math.ceil((num_samples - self.world_size) / self.world_size)
        else:
            per_rank = math.ceil(num_samples / self.world_size)
        self.num_samples_per_rank = per_rank
        self.total_size = per_rank * self.world_size

    def set_epoch(self, epoch: int, start_batch: int = 0, batch_size: int = 1) -> None:
        """Select the epoch and skip its first `start_batch` batches of `batch_size` on this rank.

        Call it before every epoch; the skip applies until the next call. A start past the end of
        the shard gives an empty epoch.
        """
        start = start_batch * batch_size
        if start < 0:
            raise ValueError(
                f"start_batch and batch_size must be >= 0, got {start_batch}, {batch_size}"
            )
        self.epoch = epoch
        # Past the end (a position converted after a batch change) means the epoch is consumed.
        self.start_index = min(start, self.num_samples_per_rank)

    def shard(self, epoch: int) -> list[int]:
        """All indices of this rank for `epoch`, before the start offset."""
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed + epoch)
            indices = torch.randperm(self.num_samples, generator=g).tolist()
        else:
            indices = list(range(self.num_samples))
        padding = self.total_size - len(indices)
        if padding > 0:  # repeat from the start, as DistributedSampler does
            indices += (indices * math.ceil(padding / len(indices)))[:padding]
        else:
            indices = indices[: self.total_size]
        return indices[self.rank : self.total_size : self.world_size]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch
        return iter([(i, epoch) for i in self.shard(epoch)[self.start_index :]])

    def __len__(self) -> int:
        return self.num_samples_per_rank - self.start_index

    def state_dict(self) -> dict[str, Any]:
        """What defines the order; the position is `TrainProgress.batch_in_epoch`."""
        return {
            "num_samples": self.num_samples,
            "world_size": self.world_size,
            "seed": self.seed,
            "shuffle": self.shuffle,
            "drop_last": self.drop_last,
            "epoch": self.epoch,
            "start_index": self.start_index,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the epoch and warn when the order cannot match the saved run's."""
        for key in ("num_samples", "world_size", "seed", "shuffle", "drop_last"):
            old, new = state_dict.get(key), getattr(self, key)
            if old is not None and old != new:
                log.warning(
                    "Sampler %s changed since the checkpoint (%s -> %s): the resumed run visits "
                    "samples in a different order than the interrupted one would have",
                    key,
                    old,
                    new,
                )
        self.epoch = int(state_dict.get("epoch", 0))
        start = int(state_dict.get("start_index", 0))
        self.start_index = start if start <= self.num_samples_per_rank else 0
