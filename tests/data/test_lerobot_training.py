"""A LeRobotDataset written by `lerobot`: trained on for a few steps, evaluated offline, cached."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import pytest
import torch
from _lerobot_helpers import CAMERAS, FIXTURES

from atlas.cache.build import build_feature_cache, open_cached_datasets
from atlas.cache.store import CacheMissError
from atlas.config import load_config
from atlas.data import build_datasets
from atlas.distributed.env import DistInfo
from atlas.eval.offline_cli import evaluate_checkpoint
from atlas.training.trainer import run_training

DEBUG_YAML = Path(__file__).resolve().parents[2] / "atlas" / "configs" / "debug.yaml"


def test_train_and_evaluate_on_the_lerobot_fixture(tmp_path: Path) -> None:
    overrides = [
        "data.format=lerobot",
        f"data.paths=[{FIXTURES / 'v30_video'}]",
        "data.synthetic=null",
        f"data.cameras=[{CAMERAS[0]}, {CAMERAS[1]}]",
        "data.image_size=28",
        "data.batch_size=4",
        "data.val_split=0.5",
        "data.history=2",
        "model.action_head.chunk_size=2",
        "training.max_steps=3",
        "training.warmup_steps=1",
        "training.val_interval=3",
        "training.log_interval=1",
        "checkpoint.save_interval=3",
        "logging.progress=false",
        f"checkpoint.save_dir={tmp_path / 'run'}",
    ]
    cfg = load_config(DEBUG_YAML, overrides)
    run_training(cfg, progress=False)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert [r["step"] for r in records if r["split"] == "train"][-1] == 3
    assert all(math.isfinite(r.get("loss", r.get("val_loss", 0.0))) for r in records)
    result = evaluate_checkpoint(tmp_path / "run" / "final")
    assert result["num_samples"] in (9, 12)  # one held-out episode of the two
    assert math.isfinite(result["l1_mean"]) and math.isfinite(result["loss"])


def test_feature_cache_from_a_lerobot_folder(tmp_path: Path) -> None:
    """`atlas cache` on LeRobot video: a hit, then a miss once a video file changes."""
    root = Path(shutil.copytree(FIXTURES / "v30_video", tmp_path / "v30_video"))
    overrides = [
        "data.format=lerobot",
        f"data.paths=[{root}]",
        "data.synthetic=null",
        "data.image_size=28",
        "data.batch_size=4",
        "data.val_split=0.5",
        "data.use_feature_cache=true",
        "model.geometry.keypoints=0",  # the keypoint branch reads pixels, which no cache holds
        "model.action_head.use_keypoints=false",
        f"data.cache_dir={tmp_path / 'cache'}",
        f"checkpoint.save_dir={tmp_path / 'run'}",
    ]
    cfg = load_config(DEBUG_YAML, overrides)
    build_feature_cache(cfg, DistInfo(), shard_size=8, progress=False)
    train, _ = open_cached_datasets(cfg, *build_datasets(cfg)[:2], torch.device("cpu"))
    sample = train[0]
    assert "images" not in sample and "vggt_tokens" in sample
    video = root / "videos" / CAMERAS[0] / "chunk-000" / "file-000.mp4"
    st = video.stat()
    os.utime(video, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    with pytest.raises(CacheMissError):
        open_cached_datasets(cfg, *build_datasets(cfg)[:2], torch.device("cpu"))
