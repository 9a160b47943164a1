"""CI smoke in the real simulator: one scripted demo of libero_spatial task 0, kept only if it
succeeded, accepted by `atlas data inspect`, and two training steps of the shipped recipe on it.

About a minute on an idle 2-core CPU (two env builds, a render-free search, ~80 rendered steps).
"""

from __future__ import annotations

import json

import h5py
import pytest

from atlas.cli import main
from atlas.eval import libero_setup


@pytest.mark.skipif(
    libero_setup.unavailable_reason() is not None, reason=str(libero_setup.unavailable_reason())
)
def test_collect_one_demo_inspect_and_train(tmp_path, capsys) -> None:
    from atlas.cli import packaged_config
    from atlas.config import load_config
    from atlas.training.trainer import run_training

    out = tmp_path / "libero_scripted"
    argv = ["collect", "--suite", "libero_spatial", "--tasks", "0", "--demos", "1"]
    assert main(["data", *argv, "--out", str(out), "--no-progress"]) == 0
    (path,) = out.glob("*_demo.hdf5")
    assert path.name.startswith("pick_up_the_black_bowl_between_the_plate_and_the_ramekin")
    summary = json.loads((out / "collect_summary.json").read_text())
    (row,) = summary.values()
    assert row["demos"] == 1 and row["expert_successes"] >= 1
    with h5py.File(path) as f:
        demo = f["data/demo_0"]
        steps = int(demo.attrs["num_samples"])
        assert 40 < steps <= 220  # within the suite's evaluation step limit
        assert demo["dones"][-1] == 1 and demo["obs/agentview_rgb"].shape == (steps, 128, 128, 3)
    capsys.readouterr()

    assert main(["data", "inspect", str(out)]) == 0
    assert f"1 files, 1 demos, {steps} steps" in capsys.readouterr().out

    cfg = load_config(
        packaged_config("libero_scripted_cpu.yaml"),
        [
            f"data.paths=[{out}]",
            "data.val_split=0.0",
            "data.batch_size=4",
            "data.num_workers=0",
            "data.image_size=28",
            "training.max_steps=2",
            "training.warmup_steps=1",
            "training.log_interval=1",
            "checkpoint.save_interval=2",
            "logging.progress=false",
            "logging.tensorboard=false",
            f"checkpoint.save_dir={tmp_path / 'run'}",
        ],
    )
    result = run_training(cfg, progress=False)
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r.get("split") == "train"]
    assert [r["step"] for r in train] == [1, 2] and all(r["loss"] > 0 for r in train)
    assert result is not None
