"""Numbers that go bad stop the run: exit 1 with the step, the good checkpoints kept, no NaN export.

The run cases go through `atlas.errors.guarded`, the wrapper of the `atlas train` command, so the
exit code and the one-line report are the user's.
"""

from __future__ import annotations

import argparse
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from atlas.config import AtlasConfig
from atlas.distributed.env import DistInfo
from atlas.errors import guarded
from atlas.training import trainer as trainer_module
from atlas.training.numerics import FiniteGuard
from atlas.training.optim import build_scheduler
from atlas.training.trainer import Trainer, run_training

ONE = DistInfo()  # one CPU process


def _train(cfg: AtlasConfig) -> int:
    return guarded(lambda _: run_training(cfg, progress=False) and 0, argparse.Namespace())


def _all_tensors_finite(run_dir: Path) -> bool:
    files = list(run_dir.rglob("*.safetensors"))
    return bool(files) and all(
        torch.isfinite(t).all()
        for f in files
        for t in load_file(f).values()
        if t.is_floating_point()
    )


def test_guard_records_the_first_bad_step_without_reading_it() -> None:
    guard = FiniteGuard(torch.device("cpu"))
    one = torch.tensor(1.0)
    guard.record(1, one, one)
    guard.check(ONE, Path("run"))  # all finite: nothing raised
    guard.record(2, one, torch.tensor(math.inf))
    guard.record(3, torch.tensor(math.nan), one)
    guard.record(4, torch.tensor(math.nan), torch.tensor(math.nan))
    assert guard.first_bad.tolist() == [3, 2]
    with pytest.raises(FloatingPointError, match="gradient norm is not finite .* at step 2"):
        guard.check(ONE, Path("run"))
    fp16 = FiniteGuard(torch.device("cpu"), check_grad_norm=False)  # the scaler skips those
    fp16.record(1, one, torch.tensor(math.inf))
    fp16.check(ONE, Path("run"))


def test_divergence_stops_at_its_step_and_keeps_the_good_checkpoints(
    tiny_cfg: Callable[..., AtlasConfig], caplog
) -> None:
    # 1e30 passes the schema (finite, > 0); step 1 runs at LR 0 (warmup), step 2's update
    # overflows the weights and step 3's loss is NaN.
    cfg = tiny_cfg("training.learning_rate=1e30", "checkpoint.save_interval=1")
    run = Path(cfg.checkpoint.save_dir)
    with caplog.at_level(logging.ERROR):
        assert _train(cfg) == 1
    [error] = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert "loss is not finite (NaN or inf) at step 3" in error and "learning_rate" in error
    assert sorted(p.name for p in run.glob("iter_*")) == ["iter_00000001", "iter_00000002"]
    assert not (run / "final").exists() and not (run / "best").exists()
    assert not (run / "summary.json").exists()  # no "status: completed"
    assert "Traceback" not in (run / "train.log").read_text()
    assert _all_tensors_finite(run)


def test_non_finite_validation_loss_stops_before_best_is_exported(
    tiny_cfg: Callable[..., AtlasConfig], monkeypatch, caplog
) -> None:
    real = trainer_module.evaluate_policy

    def nan_at_step_six(*args: Any, **kwargs: Any) -> dict[str, Any]:
        result = real(*args, **kwargs)
        if trainer.progress.step == 6:
            result["loss"] = math.nan
        return result

    monkeypatch.setattr(trainer_module, "evaluate_policy", nan_at_step_six)
    cfg = tiny_cfg()
    trainer = Trainer(cfg, ONE, progress=False)
    try:
        with pytest.raises(FloatingPointError, match="validation loss is nan at step 6"):
            trainer.fit()
    finally:
        trainer.close()
    run = Path(cfg.checkpoint.save_dir)
    assert (run / "best").exists() and trainer.progress.best_step == 3  # from the good step
    assert not (run / "final").exists()


def test_export_refuses_non_finite_weights(tiny_cfg: Callable[..., AtlasConfig]) -> None:
    cfg = tiny_cfg()
    trainer = Trainer(cfg, ONE, progress=False)
    try:
        with torch.no_grad():
            next(p for p in trainer.policy.parameters() if p.requires_grad)[0] = math.nan
        with pytest.raises(FloatingPointError, match="weight tensor.* NaN or inf"):
            trainer.ckpt.export("final")
    finally:
        trainer.close()
    run = Path(cfg.checkpoint.save_dir)
    assert not (run / "final").exists() and not list(run.glob(".tmp*"))


def test_warmup_longer_than_the_run_is_said(tiny_cfg: Callable[..., AtlasConfig], caplog) -> None:
    cfg = tiny_cfg("training.warmup_steps=100")
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with caplog.at_level(logging.WARNING, logger="atlas.training.optim"):
        build_scheduler(optimizer, cfg, total_steps=6)
    [warning] = [r.getMessage() for r in caplog.records if r.name == "atlas.training.optim"]
    assert "training.warmup_steps=100" in warning and "6 optimizer steps" in warning
    assert "5% of the peak" in warning  # the last step runs at lr_at(5) = 5 / 100 of the peak
    caplog.clear()
    build_scheduler(optimizer, cfg, total_steps=101)
    assert not [r for r in caplog.records if r.name == "atlas.training.optim"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_recording_a_step_never_synchronizes_the_gpu() -> None:
    device = torch.device("cuda")
    guard = FiniteGuard(device)
    loss, norm = torch.tensor(1.0, device=device), torch.tensor(math.inf, device=device)
    torch.cuda.set_sync_debug_mode("error")  # any device -> host wait raises
    try:
        for step in range(1, 4):
            guard.record(step, loss, norm)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert guard.first_bad.tolist() == [-1, 1]
