"""From a config to datasets, a normalizer and data loaders (the data API of docs/ARCHITECTURE.md).

    build_datasets(cfg) -> (train, val | None, normalizer)
        1. generate the synthetic dataset into data.paths[0] when data.synthetic is set and absent
        2. index every demo (cheap metadata pass; bad input raises DataError here, before training)
        3. split by episode, deterministically from training.seed
        4. load data.stats_path, or compute the statistics from the TRAIN split
    build_dataloader(dataset, cfg, sampler, train) -> DataLoader

Wrap a sampler in `IndexEpochSampler` to key samples by (index, epoch), which makes augmentation a
function of the epoch and not of the worker that happens to load the sample.
"""

from __future__ import annotations

import logging
import os
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler, get_worker_info

from atlas.config.schema import AtlasConfig, DataConfig, SyntheticConfig
from atlas.data.dataset import LiberoDataset, SampleDataset
from atlas.data.errors import DataError
from atlas.data.libero_hdf5 import LiberoIndex, build_index
from atlas.data.normalization import Normalizer, load_stats
from atlas.data.stats import compute_stats
from atlas.data.synthetic import DATA_SEED, generate_synthetic, synthetic_size
from atlas.data.transforms import frame_orientation

log = logging.getLogger(__name__)


def split_episodes(index: LiberoIndex, val_split: float, seed: int) -> tuple[list[int], list[int]]:
    """Episode ids (train, val), disjoint, deterministic from the seed.

    Each task of each file is split on its own with a generator seeded by (seed, file name), so
    every task is represented in both splits and adding a suite does not reshuffle the others (a
    file holding several tasks, as a LeRobotDataset does, seeds by file name and task). A group
    keeps at least one training episode. If rounding leaves no validation episode at all, one
    episode overall is drawn (when val_split > 0 and there are at least two).
    """
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, ep in enumerate(index.episodes):
        groups[(ep.file, ep.task)].append(i)
    tasks_per_file = Counter(file_id for file_id, _ in groups)
    val: list[int] = []
    for (file_id, task), ids in groups.items():
        n_val = min(int(np.floor(val_split * len(ids) + 0.5)), len(ids) - 1)
        if n_val > 0:
            name = Path(index.files[file_id]).name
            if tasks_per_file[file_id] > 1:
                name += "/" + index.tasks[task]
            rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
            val.extend(ids[j] for j in rng.permutation(len(ids))[:n_val])
    total = len(index.episodes)
    if not val and val_split > 0 and total >= 2:
        val = [int(np.random.default_rng(seed).integers(total))]
    val_set = set(val)
    return [i for i in range(total) if i not in val_set], sorted(val_set)


def build_datasets(cfg: AtlasConfig) -> tuple[LiberoDataset, LiberoDataset | None, Normalizer]:
    """The train and validation datasets of `cfg.data` and the normalizer (see module doc)."""
    d = cfg.data
    if d.synthetic is not None:
        ensure_synthetic(d.paths[0], d.synthetic)
    index = build_data_index(d)
    train_ids, val_ids = split_episodes(index, d.val_split, cfg.training.seed)
    if d.stats_path is not None:
        stats = load_stats(d.stats_path)
        log.info("normalization statistics from %s", d.stats_path)
    else:
        stats = compute_stats(index, train_ids)
        log.info("normalization statistics computed from %d training steps", stats["num_samples"])
    normalizer = Normalizer(stats, d.normalization)
    common: dict[str, Any] = dict(
        cameras=d.cameras,
        image_size=d.image_size,
        history=d.history,
        chunk_size=cfg.model.action_head.chunk_size,
        orientation=frame_orientation(d),
        blank_images=d.blank_images,
        normalizer=normalizer,
        seed=cfg.training.seed,
    )
    train = LiberoDataset(index, train_ids, augmentation=d.augmentation, **common)
    val = LiberoDataset(index, val_ids, **common) if val_ids else None
    log.info(
        "data: %d files, %d tasks, %d train / %d val episodes, %d / %d samples%s",
        len(index.files),
        len(index.tasks),
        len(train_ids),
        len(val_ids),
        len(train),
        len(val) if val else 0,
        f", {index.skipped} bad skipped" if index.skipped else "",
    )
    return train, val, normalizer


def build_data_index(d: DataConfig) -> LiberoIndex:
    """Index `d.paths` with the reader of `d.format` (the metadata pass; bad input raises here)."""
    common: dict[str, Any] = dict(
        filter_noops=d.filter_noops, skip_bad_episodes=d.skip_bad_episodes
    )
    if d.format == "lerobot":
        from atlas.data.lerobot import build_lerobot_index  # needs pyarrow / PyAV

        keys = dict(state_key=d.state_key, action_key=d.action_key)
        return build_lerobot_index(d.paths, d.cameras, **keys, **common)
    return build_index(d.paths, d.cameras, instruction_source=d.instruction_source, **common)


def ensure_synthetic(path: str | Path, spec: SyntheticConfig) -> None:
    """Generate the synthetic dataset at `path` unless it exists (several ranks may race).

    The seed is fixed (DATA_SEED) so the data does not change with training.seed, and the
    synthetic rollout env knows the layouts it was generated from. An existing folder must hold
    the dataset `spec` describes (a demo of an earlier size would train on other data silently).
    """
    path = Path(path)
    if path.exists():
        found, wanted = synthetic_size(path), (spec.tasks, spec.demos, spec.image_size)
        if found != wanted:
            raise DataError(
                str(path),
                f"holds a synthetic dataset of {found[0]} tasks x {found[1]} demos at {found[2]} "
                f"px, but data.synthetic asks for {wanted[0]} x {wanted[1]} at {wanted[2]} px: "
                "delete the folder to generate it again (make clean-demo), or set data.paths "
                "to another folder",
            )
        return
    log.info("generating the synthetic dataset into %s", path)
    try:
        generate_synthetic(
            path, spec.tasks, spec.demos, spec.steps, spec.image_size, seed=DATA_SEED
        )
    except (FileExistsError, OSError):
        if not path.exists():  # a real failure, not another rank having won the rename
            raise
        log.info("%s was generated by another process", path)


class IndexSampler(Protocol):
    """What a DataLoader draws its keys from: a torch Sampler, or simply a list of indices."""

    def __iter__(self) -> Iterator[Any]: ...

    def __len__(self) -> int: ...


class IndexEpochSampler(Sampler):
    """Yields (index, epoch) for each index of a wrapped sampler; `set_epoch` updates both."""

    def __init__(self, sampler: IndexSampler, epoch: int = 0) -> None:
        self.sampler, self.epoch = sampler, epoch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch
        return ((int(i), epoch) for i in self.sampler)

    def __len__(self) -> int:
        return len(self.sampler)


def build_dataloader(
    dataset: SampleDataset, cfg: AtlasConfig, sampler: IndexSampler, train: bool
) -> DataLoader:
    """A DataLoader with the loading options of `cfg.data`.

    uint8 images travel through the loader (4x less than float); pinned memory only when CUDA is
    there; persistent workers and prefetching when num_workers > 0. A training loader drops the
    last incomplete batch when there is at least one full one.
    """
    d = cfg.data
    workers = d.num_workers
    try:
        full_batches = len(sampler) // d.batch_size
    except TypeError:
        full_batches = 1
    kwargs: dict[str, Any] = {}
    if workers > 0:
        dataset.close()  # no open HDF5 handle may cross a fork
        kwargs = dict(
            persistent_workers=True, prefetch_factor=d.prefetch_factor, worker_init_fn=worker_init
        )
    return DataLoader(
        dataset,
        batch_size=d.batch_size,
        sampler=sampler,
        num_workers=workers,
        pin_memory=d.pin_memory and torch.cuda.is_available(),
        drop_last=train and full_batches >= 1,
        **kwargs,
    )


def worker_init(worker_id: int) -> None:
    """DataLoader worker_init_fn: no inherited file handle (each opens lazily in this worker),
    and batches shared with the main process by shared-memory file NAME.

    The default sharing strategy passes one file descriptor per tensor, each through its own
    socket handshake with the main process; with seven tensors a batch that cost about 20% of the
    loading throughput on 2 cores. torch's shm manager still removes the files if a process dies.
    This only changes how this worker sends tensors; the main process is untouched.
    """
    # Launchers signal the whole process group (torchrun's agent: SIGTERM; a terminal: SIGINT),
    # and the main process then finishes its optimizer step and saves (training/preemption.py):
    # its workers must live on, so they leave the group. They still stop with the main process
    # (shutdown, its terminate(), or DataLoader's watchdog when it dies).
    os.setpgid(0, 0)
    torch.multiprocessing.set_sharing_strategy("file_system")
    info = get_worker_info()
    dataset = getattr(info, "dataset", None)
    while dataset is not None and not hasattr(dataset, "reset_handles"):
        dataset = getattr(dataset, "dataset", None)  # through Subset-like wrappers
    if dataset is not None:
        dataset.reset_handles()
