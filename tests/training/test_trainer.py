"""The training loop on the real policy and synthetic data: run directory, metrics, accumulation,
frozen modules, and `atlas eval` agreeing with the trainer's validation."""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from safetensors.torch import load_file

from atlas.config import AtlasConfig, config_from_resolved, dump_yaml
from atlas.distributed.env import DistInfo
from atlas.eval.offline_cli import run_eval_command
from atlas.training.trainer import Trainer, run_training

ROOT = Path(__file__).resolve().parents[2]
DEBUG_YAML = ROOT / "atlas" / "configs" / "debug.yaml"

# Settings under which two ways of computing the same step must give the same weights.
# chunk_size 1: no masked chunk steps, so a micro-batch loss is a plain per-sample mean and
# mean(mean(2), mean(2)) == mean(4). fp32, no dropout (debug.yaml), no augmentation.
# adam_eps 1e-5: some parameters have an exactly-zero gradient (attention key biases; q/k of the
# self-attention over a single query) and Adam turns the float rounding noise of that zero into
# lr-sized steps (~1e-4 here with the default 1e-8). A larger eps also makes the check sensitive
# to the gradient SCALE (Adam alone is scale-invariant): a missing `loss / n` fails it by ~1e-3.
EQUIVALENCE = ["model.action_head.chunk_size=1", "training.adam_eps=1e-5"]


def _strict_json(line: str) -> dict[str, Any]:
    def reject(token: str) -> None:
        raise ValueError(f"non-standard JSON constant {token}")

    return json.loads(line, parse_constant=reject)


@pytest.fixture(scope="module")
def trained_run(
    make_cfg: Callable[..., AtlasConfig], tmp_path_factory: pytest.TempPathFactory
) -> tuple[AtlasConfig, dict[str, Any]]:
    """6 optimizer steps through run_training: log every 2, validate every 3, save every 3."""
    cfg = make_cfg(tmp_path_factory.mktemp("trained") / "run")
    return cfg, run_training(cfg, progress=False)


def test_run_directory_and_metrics(trained_run: tuple[AtlasConfig, dict[str, Any]]) -> None:
    cfg, summary = trained_run
    run = Path(cfg.checkpoint.save_dir)
    records = [_strict_json(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["split"] == "train"]
    val = [r for r in records if r["split"] == "val"]
    assert [r["step"] for r in train] == [2, 4, 6]
    required = {"step", "epoch", "loss", "lr", "grad_norm", "samples_per_s", "data_wait_frac"}
    for r in train:
        assert required <= set(r)
        assert math.isfinite(r["loss"]) and r["lr"] > 0 and 0 <= r["data_wait_frac"] <= 1
        assert any(k.startswith("lr/") for k in r)
    assert {3, 6} <= {r["step"] for r in val}
    for r in val:
        assert math.isfinite(r["val_loss"]) and set(r["val_l1"]) >= {"x", "gripper"}
        assert 0 <= r["val_gripper_accuracy"] <= 1
    # the LR logged at step s is the one the s-th update used: lr_at(s - 1)
    assert train[0]["lr"] == pytest.approx(cfg.training.learning_rate * 1 / 2)

    assert config_from_resolved(yaml.safe_load((run / "config.yaml").read_text()), "x") == cfg
    assert (
        "Training setup:\n  Distributed: False\n  World size: 1\n  Rank: 0, Local rank: 0\n"
        "  Device: cpu" in (run / "train.log").read_text()
    )
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    plots = sorted(p.name for p in (run / "plots").glob("*.png"))
    assert plots == ["loss.png", "lr.png", "throughput.png"]
    assert "plots/loss.png" in (run / "report.md").read_text()
    for export in ("best", "final"):
        assert (run / export / "model.safetensors").is_file()

    saved = json.loads((run / "summary.json").read_text())
    assert saved == json.loads(json.dumps(summary))
    assert saved["optimizer_steps"] == 6 and saved["status"] == "completed"
    assert saved["samples_seen"] == 6 * cfg.effective_batch_size(1)
    best = min(val, key=lambda r: r["val_loss"])
    assert saved["best_val_loss"] == pytest.approx(best["val_loss"])
    assert saved["best_step"] == best["step"]
    assert saved["throughput_samples_per_s"] > 0


def test_atlas_eval_equals_the_trainers_validation(
    trained_run: tuple[AtlasConfig, dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    cfg, summary = trained_run
    run = Path(cfg.checkpoint.save_dir)
    args = argparse.Namespace(
        checkpoint=str(run / "best"), data=None, batch_size=None, device="cpu", json=True
    )
    capsys.readouterr()
    assert run_eval_command(args) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    val = next(r for r in records if r["split"] == "val" and r["step"] == summary["best_step"])
    assert result["loss"] == pytest.approx(val["val_loss"], rel=1e-6)
    assert result["gripper_accuracy"] == pytest.approx(val["val_gripper_accuracy"], rel=1e-9)
    assert result["num_samples"] == val["val_num_samples"]
    for dim, value in val["val_l1"].items():
        assert result["l1"][dim] == pytest.approx(value, rel=1e-6, abs=1e-9)
        assert result["mse"][dim] == pytest.approx(val["val_mse"][dim], rel=1e-6, abs=1e-12)
    assert set(result["per_task"]) <= set(summary_tasks(run))
    assert all("loss" in m for m in result["per_task"].values())


def summary_tasks(run: Path) -> list[str]:
    """Task instructions of the run's dataset (from the per-task eval of its export)."""
    from atlas.data import build_datasets

    cfg = config_from_resolved(yaml.safe_load((run / "config.yaml").read_text()), "cfg")
    return build_datasets(cfg)[0].tasks


def _fit(cfg: AtlasConfig) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Train in this process; returns the policy state before and after."""
    trainer = Trainer(cfg, DistInfo(), progress=False)
    before = {k: v.detach().clone() for k, v in trainer.policy.state_dict().items()}
    try:
        trainer.fit()
    finally:
        trainer.close()
    return before, dict(trainer.policy.state_dict())


def test_gradient_accumulation_matches_a_larger_batch(
    tiny_cfg: Callable[..., AtlasConfig],
) -> None:
    common = [*EQUIVALENCE, "training.max_steps=4", "training.val_interval=100"]
    _, big = _fit(tiny_cfg(*common, "data.batch_size=4", run="b4"))
    before, acc = _fit(
        tiny_cfg(*common, "data.batch_size=2", "training.gradient_accumulation_steps=2", run="b2")
    )
    trainable = [k for k in big if k.startswith(("geometry.", "fusion.", "action_head."))]
    assert trainable
    for key in trainable:
        torch.testing.assert_close(acc[key], big[key], rtol=0, atol=1e-6, msg=key)
    # frozen modules are untouched, trainable ones moved
    for key, value in acc.items():
        if key.startswith(("vggt.", "language_encoder.")):
            assert torch.equal(value, before[key]), key
    assert any(not torch.equal(acc[k], before[k]) for k in trainable)


def test_two_process_ddp_matches_one_process(
    tiny_cfg: Callable[..., AtlasConfig], tmp_path: Path
) -> None:
    # Same effective batch (1 x 4 vs 2 x 2), no LR scaling: the weights must agree. The ranks'
    # micro-batches are the interleaved halves of the single process's batch (DistributedSampler
    # order), and DDP averages their gradients.
    common = [
        *EQUIVALENCE,
        "training.max_steps=3",
        "training.lr_scaling=none",
        "training.log_interval=1",
        "training.val_interval=3",
    ]
    one = tiny_cfg(*common, "data.batch_size=4", run="one")
    two = tiny_cfg(*common, "data.batch_size=2", run="two")
    run_training(one, progress=False)  # also generates the dataset before the ranks need it
    config = tmp_path / "two.yaml"
    config.write_text(dump_yaml(two))
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    cmd = [*torchrun, str(ROOT / "atlas" / "train.py"), "--config", str(config), "--no-progress"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    banner = "Training setup:\n  Distributed: True\n  World size: 2\n  Rank: 0, Local rank: 0\n"
    assert banner + "  Device: cpu" in proc.stderr

    a = load_file(str(Path(one.checkpoint.save_dir) / "final" / "model.safetensors"))
    b = load_file(str(Path(two.checkpoint.save_dir) / "final" / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=1e-5, msg=key)

    # rank 0 alone writes the shared files; metrics are global (averaged / reduced)
    run_two = Path(two.checkpoint.save_dir)
    records = [json.loads(x) for x in (run_two / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["split"] == "train"] == [1, 2, 3]
    assert (run_two / "train_rank1.log").is_file()
    val_one = [
        json.loads(x)
        for x in (Path(one.checkpoint.save_dir) / "metrics.jsonl").read_text().splitlines()
        if '"val"' in x
    ][-1]
    val_two = [r for r in records if r["split"] == "val"][-1]
    assert val_two["val_num_samples"] == val_one["val_num_samples"]  # no padded duplicates
    assert val_two["val_loss"] == pytest.approx(val_one["val_loss"], rel=1e-4)
