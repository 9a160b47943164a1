"""A LeRobotDataset written by `lerobot` is trained on for a few steps and evaluated offline."""

from __future__ import annotations

import json
import math
from pathlib import Path

from _lerobot_helpers import CAMERAS, FIXTURES

from atlas.config import load_config
from atlas.eval.offline import evaluate_checkpoint
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
