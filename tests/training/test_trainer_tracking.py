"""RunTracker: progress bar, metrics.jsonl on resume, W&B run id reuse, rank gating, plots."""

from __future__ import annotations

import io
import json
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from atlas.config import AtlasConfig, load_config
from atlas.distributed.env import DistInfo
from atlas.training.report import make_plots, write_report
from atlas.training.tracking import RunTracker, check_wandb, read_metrics

TRAIN = {
    "loss": 0.5,
    "loss_pose": 0.2,
    "lr/head": 1e-3,
    "grad_norm": 1.0,
    "samples_per_s": 5.0,
    "data_wait_frac": 0.1,
}
VAL = {"loss": 0.4, "l1": {"x": 0.1}, "l1_mean": 0.1, "gripper_accuracy": 0.9, "per_task": {}}


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _cfg(tmp_path: Path, *overrides: str) -> AtlasConfig:
    base = [f"checkpoint.save_dir={tmp_path / 'run'}", "logging.tensorboard=false"]
    return load_config(None, [*base, *overrides])


def _log_steps(tracker: RunTracker, steps: range) -> None:
    for step in steps:
        tracker.log_train(step, 0, dict(TRAIN))
        if step % 2 == 0:
            tracker.log_val(step, 0, dict(VAL))


def test_progress_bar_only_on_a_terminal_and_when_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    bar = RunTracker(_cfg(tmp_path), DistInfo(), total_steps=4, start_step=0, progress=True)
    bar.advance()
    bar.log_train(1, 0, dict(TRAIN))
    bar.close()
    assert "train:" in terminal.getvalue() and "loss=0.5000" in terminal.getvalue()
    for progress, option in [(False, "true"), (True, "false")]:
        tracker = RunTracker(
            _cfg(tmp_path, f"logging.progress={option}"),
            DistInfo(),
            total_steps=4,
            start_step=0,
            progress=progress,
        )
        assert tracker._bar is None
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # not a terminal
    assert (
        RunTracker(_cfg(tmp_path), DistInfo(), total_steps=4, start_step=0, progress=True)._bar
        is None
    )


def test_resume_drops_records_past_the_checkpoint(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    first = RunTracker(cfg, DistInfo(), total_steps=10, start_step=0, progress=False)
    _log_steps(first, range(1, 8))
    first.close()
    resumed = RunTracker(cfg, DistInfo(), total_steps=10, start_step=4, progress=False)
    _log_steps(resumed, range(5, 7))
    resumed.close()
    records = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in records if r["split"] == "train"] == [1, 2, 3, 4, 5, 6]
    assert [r["step"] for r in records if r["split"] == "val"] == [2, 4, 6]
    fresh = RunTracker(cfg, DistInfo(), total_steps=10, start_step=0, progress=False)
    fresh.close()
    assert read_metrics(tmp_path / "run" / "metrics.jsonl") == []  # a new run starts empty


def test_only_rank_zero_writes(tmp_path: Path) -> None:
    other = RunTracker(
        _cfg(tmp_path), DistInfo(rank=1, world_size=2), total_steps=4, start_step=0, progress=True
    )
    _log_steps(other, range(1, 3))
    other.finish({"status": "completed"})
    assert not (tmp_path / "run").exists()


def test_wandb_offline_run_id_is_reused_on_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[dict[str, Any]] = []

    class Run:
        def __init__(self) -> None:
            self.logged: list[tuple[dict[str, Any], int]] = []

        def log(self, data: dict[str, Any], step: int) -> None:
            self.logged.append((data, step))

        def finish(self) -> None:
            pass

    ids = iter(["first", "second"])
    fake = types.SimpleNamespace(
        util=types.SimpleNamespace(generate_id=lambda: next(ids)),
        init=lambda **kw: calls.append(kw) or Run(),
    )
    monkeypatch.setitem(sys.modules, "wandb", fake)
    cfg = _cfg(tmp_path, "logging.wandb.enabled=true")
    for start in (0, 3):
        tracker = RunTracker(cfg, DistInfo(), total_steps=6, start_step=start, progress=False)
        _log_steps(tracker, range(start + 1, start + 3))
        tracker.close()
    assert [c["id"] for c in calls] == ["first", "first"]
    assert all(c["mode"] == "offline" and c["resume"] == "allow" for c in calls)
    assert (tmp_path / "run" / "wandb_run_id.txt").read_text().strip() == "first"


def test_wandb_enabled_but_missing_says_how_to_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(RuntimeError, match=r"pip install 'atlas-vla\[wandb\]'"):
        check_wandb(_cfg(tmp_path, "logging.wandb.enabled=true"))
    check_wandb(_cfg(tmp_path))  # disabled: nothing to check


def test_plots_and_report(tmp_path: Path) -> None:
    tracker = RunTracker(_cfg(tmp_path), DistInfo(), total_steps=8, start_step=0, progress=False)
    _log_steps(tracker, range(1, 9))
    tracker.close()
    run = tmp_path / "run"
    plots = make_plots(run / "metrics.jsonl", run / "plots")
    assert sorted(plots) == ["loss", "lr", "throughput"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in plots.values())
    report = write_report(run, {"best_val_loss": 0.4, "status": "completed"}, plots).read_text()
    assert "![loss](plots/loss.png)" in report and "| best_val_loss | 0.4 |" in report
    json.dumps(read_metrics(run / "metrics.jsonl"))  # plain JSON all the way
