"""Data-loading throughput: AtlasVLA's loader against a naive HDF5 loader on the same files.

    python -m atlas.bench.data [--quick] [--data DIR] [--workers 0 1 2] [--image-size 224]
    python -m atlas.bench.data --format lerobot ...   LeRobotDataset folders (bench/data_lerobot.py)

Both loaders read the same synthetic LIBERO files (128 px cameras, as the real ones), two cameras
resized to `--image-size`, in the same random order and batch size, with 0, 1 and 2 workers:

  atlas  LiberoDataset + build_dataloader: HDF5 handles opened once per worker, only the needed
         frames read, a whole batch resized by one uint8 kernel call, uint8 through the loader.
  naive  what a first version usually does: open the file on every item, read the frames, convert
         to float in the worker, resize in float, float tensors through the loader.

Prints a table and one JSON line (`{"bench": "data", ...}`). Throughput is measured after the
first batch of each loader (worker start-up excluded): the median of three windows of 60 batches
(one window of 20 with --quick).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, RandomSampler

from atlas.config.schema import AtlasConfig
from atlas.data.build import build_dataloader
from atlas.data.dataset import LiberoDataset
from atlas.data.libero_hdf5 import LiberoIndex, build_index
from atlas.data.normalization import Normalizer
from atlas.data.stats import compute_stats
from atlas.data.synthetic import generate_synthetic

CAMERAS = ["agentview_rgb", "eye_in_hand_rgb"]


class NaiveDataset(Dataset):
    """The baseline: one file open, float conversion and float resize per item."""

    def __init__(self, index: LiberoIndex, image_size: int):
        self.files, self.size = index.files, image_size
        self.items = [(ep.file, ep.demo, int(t)) for ep in index.episodes for t in ep.steps]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        file, demo, t = self.items[i]
        with h5py.File(self.files[file], "r") as f:
            grp = f["data"][demo]
            frames = [grp["obs"][c][t] for c in CAMERAS]
            action = torch.from_numpy(grp["actions"][t].astype(np.float32))
            state = np.concatenate([grp["obs/ee_states"][t], grp["obs/gripper_states"][t]])
        images = torch.from_numpy(np.stack(frames)[:, ::-1].copy()).permute(0, 3, 1, 2)
        images = F.interpolate(images.float() / 255, size=(self.size, self.size), mode="bilinear")
        return {"images": images, "actions": action, "proprio": torch.from_numpy(state).float()}


def _throughput(loader: DataLoader, batches: int, windows: int) -> float:
    """Median samples per second over `windows` runs of `batches` batches.

    The first batch is not timed (worker start-up); the median damps noisy neighbours.
    """
    it = iter(loader)
    next(it)
    rates = []
    for _ in range(windows):
        count, start = 0, time.perf_counter()
        for _ in range(batches):
            count += len(next(it)["images"])
        rates.append(count / (time.perf_counter() - start))
    return float(np.median(rates))


def _loaders(index: LiberoIndex, args: argparse.Namespace, workers: int):
    """(atlas loader, naive loader) sampling the same way, with the same batch size."""
    cfg = AtlasConfig()
    cfg.data = dataclasses.replace(
        cfg.data,
        cameras=CAMERAS,
        image_size=args.image_size,
        batch_size=args.batch_size,
        num_workers=workers,
        pin_memory=False,
    )
    normalizer = Normalizer(compute_stats(index), "q99")
    ours = LiberoDataset(
        index,
        range(len(index.episodes)),
        cameras=CAMERAS,
        image_size=args.image_size,
        normalizer=normalizer,
    )
    # A long sampler (several passes) so the measured batches never hit an epoch boundary.
    sampler = RandomSampler(
        ours, replacement=True, num_samples=10**7, generator=torch.Generator().manual_seed(0)
    )
    atlas = build_dataloader(ours, cfg, sampler, train=True)
    naive_kw: dict[str, Any] = {"prefetch_factor": 2} if workers else {}
    naive = DataLoader(
        NaiveDataset(index, args.image_size),
        batch_size=args.batch_size,
        sampler=sampler,
        num_workers=workers,
        **naive_kw,
    )
    return atlas, naive


def _data_dir(args: argparse.Namespace, tmp: str) -> Path | list[str]:
    if args.data:
        return list(args.data)
    tasks, demos = (2, 6) if args.quick else (4, 20)
    return generate_synthetic(Path(tmp) / "bench_synth", tasks, demos, 64, 128, seed=0)


def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        data = _data_dir(args, tmp)
        start = time.perf_counter()
        index = build_index(data, CAMERAS)
        index_s = time.perf_counter() - start
        results: dict[str, dict[int, float]] = {"atlas": {}, "naive": {}}
        batches = args.batches or (20 if args.quick else 60)
        windows = 1 if args.quick else 3
        for workers in args.workers:
            atlas, naive = _loaders(index, args, workers)
            results["atlas"][workers] = _throughput(atlas, batches, windows)
            results["naive"][workers] = _throughput(naive, max(batches // 4, 5), windows)
            del atlas, naive  # stop persistent workers before the next setting
    return {
        "bench": "data",
        "image_size": args.image_size,
        "cameras": len(CAMERAS),
        "batch_size": args.batch_size,
        "files": len(index.files),
        "samples": index.num_samples,
        "index_build_s": round(index_s, 4),
        "cpu_count": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "samples_per_s": {k: {w: round(v, 1) for w, v in r.items()} for k, r in results.items()},
        "speedup": {w: round(results["atlas"][w] / results["naive"][w], 2) for w in args.workers},
    }


def _table(r: dict[str, Any]) -> str:
    lines = [
        f"data loading, {r['cameras']} cameras at {r['image_size']} px, batch {r['batch_size']}, "
        f"{r['samples']} samples in {r['files']} files (index built in {r['index_build_s']} s), "
        f"{r['affinity']} usable CPU cores",
        f"{'workers':>8} {'atlas /s':>10} {'naive /s':>10} {'speedup':>8}",
    ]
    for w, speed in r["speedup"].items():
        ours, naive = r["samples_per_s"]["atlas"][w], r["samples_per_s"]["naive"][w]
        lines.append(f"{w:>8} {ours:>10.0f} {naive:>10.0f} {speed:>7.1f}x")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer files and batches")
    parser.add_argument(
        "--data",
        nargs="+",
        help="LIBERO files (or LeRobotDataset folders) to read (default: generate synthetic ones)",
    )
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=0, help="batches per window (0: auto)")
    parser.add_argument(
        "--format",
        choices=["libero_hdf5", "lerobot"],
        default="libero_hdf5",
        help="lerobot: LeRobotDataset video and image folders (atlas/bench/data_lerobot.py)",
    )
    from atlas.bench import data_lerobot

    data_lerobot.add_args(parser)
    args = parser.parse_args(argv)
    if args.format == "lerobot":
        result = data_lerobot.run(args)
        print(data_lerobot.table(result))
    else:
        result = run(args)
        print(_table(result))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
