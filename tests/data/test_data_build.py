"""Episode split, build_datasets, the DataLoader and worker-independent augmentation."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from torch.utils.data import SequentialSampler

from atlas.config.schema import AtlasConfig, AugmentationConfig, SyntheticConfig
from atlas.data.build import IndexEpochSampler, build_dataloader, build_datasets, split_episodes
from atlas.data.dataset import LiberoDataset
from atlas.data.libero_hdf5 import build_index
from atlas.data.normalization import save_stats
from atlas.data.stats import compute_stats


def _config(path: Path, **data) -> AtlasConfig:
    cfg = AtlasConfig()
    cfg.data = dataclasses.replace(
        cfg.data,
        paths=[str(path)],
        cameras=["agentview_rgb"],
        image_size=14,
        batch_size=4,
        num_workers=0,
        pin_memory=False,
        val_split=0.25,
        **data,
    )
    cfg.model.action_head.chunk_size = 2
    return cfg


def test_split_is_deterministic_disjoint_and_covers_every_task(synth_dir: Path) -> None:
    index = build_index(synth_dir, ["agentview_rgb"])
    train, val = split_episodes(index, 0.25, seed=7)
    assert (train, val) == split_episodes(index, 0.25, seed=7)
    assert not set(train) & set(val) and sorted(train + val) == list(range(len(index.episodes)))
    assert len(val) == 3  # one of the four demos of each of the three tasks
    assert {index.episodes[i].task for i in val} == {0, 1, 2}
    others = {tuple(split_episodes(index, 0.25, seed=s)[1]) for s in range(8)}
    assert len(others) > 1  # the seed matters
    assert split_episodes(index, 0.0, seed=7)[1] == []


def test_build_datasets_generates_splits_and_normalizes(tmp_path: Path) -> None:
    path = tmp_path / "synth"
    spec = SyntheticConfig(tasks=2, demos=4, steps=16, image_size=32)
    train, val, norm = build_datasets(_config(path, synthetic=spec))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["synth"]  # generated, atomically
    assert val is not None and len(train.tasks) == 2 and train.tasks == val.tasks
    train_eps = {train[i]["episode_index"] for i in range(len(train))}
    val_eps = {val[i]["episode_index"] for i in range(len(val))}
    assert train_eps == set(train.episode_ids) and not train_eps & val_eps  # never in both
    assert norm.stats["num_samples"] == len(train)  # statistics of the TRAIN split only
    assert norm.mode == "q99" and train.normalizer is norm and val.normalizer is norm
    batch = next(iter(build_dataloader(train, _config(path), SequentialSampler(train), True)))
    assert batch["images"].shape == (4, 1, 3, 14, 14) and batch["images"].dtype == torch.uint8
    assert batch["actions"].shape == (4, 2, 7) and batch["action_mask"].shape == (4, 2)
    assert batch["proprio"].dtype == torch.float32 and len(batch["instruction"]) == 4
    assert batch["task_index"].dtype == torch.int64 and batch["timestep"].dtype == torch.int64
    assert batch["actions"].abs().max() < 1.5  # normalized


def test_build_datasets_loads_the_stats_file(synth_dir: Path, tmp_path: Path) -> None:
    stats = compute_stats(build_index(synth_dir, ["agentview_rgb"]))
    save_stats(stats, tmp_path / "stats.json")
    _, _, norm = build_datasets(_config(synth_dir, stats_path=str(tmp_path / "stats.json")))
    assert norm.stats == stats


def _augmented(path: Path) -> LiberoDataset:
    index = build_index(path, ["agentview_rgb", "eye_in_hand_rgb"])
    aug = AugmentationConfig(
        enabled=True,
        crop_scale=0.7,
        shift_pixels=2,
        brightness=0.3,
        contrast=0.3,
        saturation=0.3,
        hue=0.05,
    )
    return LiberoDataset(
        index,
        range(6),
        cameras=["agentview_rgb", "eye_in_hand_rgb"],
        image_size=28,
        augmentation=aug,
        seed=5,
    )


def _all_images(ds: LiberoDataset, workers: int, epoch: int, cfg: AtlasConfig) -> torch.Tensor:
    cfg.data.num_workers = workers
    sampler = IndexEpochSampler(SequentialSampler(range(len(ds))), epoch=epoch)
    loader = build_dataloader(ds, cfg, sampler, train=False)
    return torch.cat([b["images"] for b in loader])


def test_augmentation_is_identical_with_0_and_2_workers(synth_dir: Path) -> None:
    ds, cfg = _augmented(synth_dir), _config(synth_dir)
    serial = _all_images(ds, 0, epoch=3, cfg=cfg)
    parallel = _all_images(ds, 2, epoch=3, cfg=cfg)
    assert torch.equal(serial, parallel)
    assert not torch.equal(serial, _all_images(ds, 0, epoch=4, cfg=cfg))  # a new epoch, new draws
    ds.augmentation = None
    assert not torch.equal(serial, _all_images(ds, 0, epoch=3, cfg=cfg))  # it did augment


def test_dataset_pickles_without_open_handles(synth_dir: Path) -> None:
    import pickle

    ds = _augmented(synth_dir)
    ds[0]  # opens a handle in this process
    assert ds._reader._h5 and ds._reader._fds
    clone = pickle.loads(pickle.dumps(ds))
    assert not clone._reader._h5 and torch.equal(clone[(1, 2)]["images"], ds[(1, 2)]["images"])
    ds.close()


def test_index_epoch_sampler_forwards_set_epoch() -> None:
    class Recorder(SequentialSampler):
        epoch = -1

        def set_epoch(self, epoch: int) -> None:
            self.epoch = epoch

    inner = Recorder(range(3))
    sampler = IndexEpochSampler(inner)
    sampler.set_epoch(5)
    assert inner.epoch == 5 and list(sampler) == [(0, 5), (1, 5), (2, 5)] and len(sampler) == 3


@pytest.mark.parametrize("history", [1, 2])
def test_getitems_equals_getitem(synth_dir: Path, history: int) -> None:
    index = build_index(synth_dir, ["agentview_rgb", "eye_in_hand_rgb"])
    ds = LiberoDataset(
        index,
        range(4),
        cameras=["agentview_rgb", "eye_in_hand_rgb"],
        image_size=42,
        history=history,
        chunk_size=3,
    )
    keys = [5, 0, 17, 3]
    for one, batch in zip([ds[k] for k in keys], ds.__getitems__(keys)):
        assert torch.equal(one["images"], batch["images"])
        assert torch.equal(one["actions"], batch["actions"])


def test_lowdim_items_match_the_full_samples(synth_dir: Path) -> None:
    index = build_index(synth_dir, ["agentview_rgb"])
    ds = LiberoDataset(index, range(3), cameras=["agentview_rgb"], image_size=14, chunk_size=2)
    for full, low in zip(ds.__getitems__([0, 7, 9]), ds.lowdim_items([0, 7, 9])):
        assert "images" not in low and set(full) == {"images", *low}
        assert torch.equal(full["actions"], low["actions"]) and full["timestep"] == low["timestep"]
