"""Data-loading throughput from LeRobotDataset folders: AV1 video and PNG images, against LeRobot.

    python -m atlas.bench.data --format lerobot [--quick] [--data ROOT ...] [--workers 0 1 2]
                               [--lerobot-python PATH]

Without --data, synthetic LIBERO demos with 256 px cameras (the size of the LIBERO LeRobot
publications), textured so that AV1 spends on them about what it spends on LIBERO's rendered
frames (`add_texture`), are written and converted by `atlas data convert` into a video folder (AV1,
LeRobot's encoder settings) and an image folder (PNG in the parquet). For each folder and worker
count, AtlasVLA's loader (`build_datasets` + `build_dataloader`, data.format: lerobot, two cameras
resized to --image-size, uint8 batches) is timed on random samples; with --lerobot-python (an
interpreter where `lerobot` is installed) LeRobot's own `LeRobotDataset` is timed on the same
folder in a DataLoader with the same sampling (atlas/bench/lerobot_loader.py). Prints a table and
one JSON line (`{"bench": "data_lerobot", ...}`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import RandomSampler

from atlas.config.schema import AtlasConfig
from atlas.data.build import build_dataloader, build_datasets

CAMERAS = ["agentview_rgb", "eye_in_hand_rgb"]  # found as observation.images.image / wrist_image
LEROBOT_SCRIPT = Path(__file__).with_name("lerobot_loader.py")


def _folders(args: argparse.Namespace, tmp: str) -> dict[str, Path]:
    """{name: LeRobotDataset root}: the --data folders, or generated video + image ones."""
    if args.data:
        return {Path(p).name: Path(p) for p in args.data}
    from atlas.data.lerobot_write import convert_to_lerobot
    from atlas.data.synthetic import generate_synthetic

    tasks, demos = (2, 4) if args.quick else (4, 12)
    suite = generate_synthetic(Path(tmp) / "suite", tasks, demos, 64, args.source_size, seed=0)
    if args.texture > 0:
        add_texture(suite, args.texture)
    return {
        "av1 video": convert_to_lerobot(suite, Path(tmp) / "video"),
        "png images": convert_to_lerobot(suite, Path(tmp) / "image", video=False),
    }


def add_texture(suite: Path, amplitude: float, seed: int = 0) -> None:
    """Overlay a fixed multi-scale texture and sensor noise on every camera frame, in place.

    The synthetic scenes are flat colours, which AV1 codes in ~0.5 KB a frame; LIBERO's rendered
    scenes cost ~3.5 KB a frame in lerobot/libero (1.9 GB for 273,465 frames of 2 cameras), and
    decoding time grows with that. Amplitude 5 gives about 3.4 KB a frame at 256 px.
    """
    import h5py
    import numpy as np

    rng = np.random.default_rng(seed)
    for path in sorted(suite.glob("*.hdf5")):
        with h5py.File(path, "r+") as f:
            for demo in f["data"].values():
                for camera in CAMERAS:
                    frames = demo["obs"][camera]
                    side = frames.shape[1]
                    texture = np.zeros((side, side, 3), np.float32)
                    for cell in (4, 16, 64):
                        grid = rng.standard_normal((side // cell + 1, side // cell + 1, 3))
                        texture += np.kron(grid, np.ones((cell, cell, 1)))[:side, :side]
                    noise = rng.standard_normal(frames.shape) * 0.3
                    values = frames[()] + amplitude * (texture + noise)
                    frames[...] = np.clip(values, 0, 255).astype(np.uint8)


def _ours(root: Path, args: argparse.Namespace, workers: int, batches: int, windows: int):
    """(samples/s, samples per CPU-second with 0 workers else None) of AtlasVLA's loader."""
    from atlas.bench.data import _throughput

    cfg = AtlasConfig()
    cfg.data = dataclasses.replace(
        cfg.data,
        format="lerobot",
        paths=[str(root)],
        cameras=CAMERAS,
        image_size=args.image_size,
        batch_size=args.batch_size,
        num_workers=workers,
        pin_memory=False,
        val_split=0.0,
    )
    train, _, _ = build_datasets(cfg)
    sampler = RandomSampler(
        train, replacement=True, num_samples=10**7, generator=torch.Generator().manual_seed(0)
    )
    loader = build_dataloader(train, cfg, sampler, train=True)
    try:
        rate = _throughput(loader, batches, windows)
        return (rate, cpu_rate(loader, batches)) if workers == 0 else (rate, None)
    finally:
        del loader  # stop persistent workers before the next setting


def cpu_rate(loader: Any, batches: int) -> float:
    """Samples per CPU-second of this process (0 workers: it does all the loading).

    Unlike samples/s this hardly depends on what else the machine runs, so on a shared machine it
    estimates the idle rate: about `cores x cpu_rate` with one worker per core.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a DataLoader worker; CPU time of one thread
    try:
        it = iter(loader)
        next(it)
        count, start = 0, time.process_time()
        for _ in range(batches):
            count += len(next(it)["images"])
        return count / (time.process_time() - start)
    finally:
        torch.set_num_threads(threads)


def _lerobot(root: Path, args: argparse.Namespace, workers: int, batches: int, windows: int):
    """LeRobot's loader in its own interpreter; None (and a note) when it cannot run."""
    command = [args.lerobot_python, str(LEROBOT_SCRIPT), str(root), "--workers", str(workers)]
    command += ["--batch-size", str(args.batch_size), "--batches", str(batches)]
    command += ["--windows", str(windows)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1800)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        print(f"LeRobot's loader failed on {root}: {tail}", file=sys.stderr)
        return None
    record = json.loads(lines[-1])
    return float(record["lerobot_samples_per_s"]), record.get("lerobot_samples_per_cpu_s")


def run(args: argparse.Namespace) -> dict[str, Any]:
    batches = args.batches or (10 if args.quick else 40)
    windows = 1 if args.quick else 3
    results: dict[str, dict[str, dict[int, float | None]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, root in _folders(args, tmp).items():
            row: dict[str, dict[Any, float | None]] = {"atlas": {}, "lerobot": {}}
            for workers in args.workers:
                rate, cpu = _ours(root, args, workers, batches, windows)
                row["atlas"][workers] = round(rate, 1)
                if cpu is not None:
                    row["atlas"]["per_cpu_s"] = round(cpu, 1)
                if args.lerobot_python:
                    theirs = _lerobot(root, args, workers, max(batches // 4, 5), windows)
                    row["lerobot"][workers] = None if theirs is None else round(theirs[0], 1)
                    if theirs is not None and theirs[1] is not None:
                        row["lerobot"]["per_cpu_s"] = round(theirs[1], 1)
            results[name] = row
    return {
        "bench": "data_lerobot",
        "image_size": args.image_size,
        "source_size": args.source_size if not args.data else None,
        "texture": args.texture if not args.data else None,
        "cameras": len(CAMERAS),
        "batch_size": args.batch_size,
        "cpu_count": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "samples_per_s": results,
    }


def table(r: dict[str, Any]) -> str:
    lines = [
        f"LeRobotDataset loading, {r['cameras']} cameras -> {r['image_size']} px, batch "
        f"{r['batch_size']}, {r['affinity']} usable CPU cores, load average {r['load_average']}",
        f"{'dataset':<14} {'workers':>8} {'atlas /s':>10} {'lerobot /s':>11} {'ratio':>7}",
    ]
    for name, row in r["samples_per_s"].items():
        for w, ours in row["atlas"].items():  # per_cpu_s: samples per CPU-second, 0 workers
            theirs = row["lerobot"].get(w)
            ratio = f"{ours / theirs:6.1f}x" if theirs else f"{'-':>7}"
            shown = f"{theirs:>11.0f}" if theirs else f"{'-':>11}"
            lines.append(f"{name:<14} {w:>8} {ours:>10.0f} {shown} {ratio}")
    return "\n".join(lines)


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source-size", type=int, default=256, help="generated camera side")
    parser.add_argument(
        "--texture", type=float, default=5.0, help="texture amplitude (0: flat synthetic frames)"
    )
    parser.add_argument(
        "--lerobot-python", help="python of a virtualenv with lerobot, to time LeRobot's loader"
    )
