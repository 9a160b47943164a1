"""CheckpointManager on a toy model: layout, safe loading, retention, corruption, batch changes.

Independent of the real trainer (see _ckpt_toy.py); the trainer-level kill/resume tests are in
test_resume_trainer.py.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from pathlib import Path
from typing import cast

import pytest
import torch
from _ckpt_toy import ToyModel, build, same_weights, toy_config, train
from safetensors.torch import load_file

from atlas.checkpoint import layout
from atlas.checkpoint.cli import add_ckpt_subcommands
from atlas.checkpoint.manager import (
    CheckpointError,
    CheckpointManager,
    SaveReason,
    resolve_resume,
)
from atlas.checkpoint.state import TrainProgress
from atlas.config.schema import AtlasConfig
from atlas.distributed.env import DistInfo
from atlas.distributed.strategy import Strategy


def _progress() -> dict[str, TrainProgress]:
    return {"progress": TrainProgress()}


def _manager(cfg: AtlasConfig, progress: TrainProgress) -> CheckpointManager:
    model, objects = build(cfg, DistInfo(), total=10)
    return CheckpointManager(cfg, DistInfo(), model, {**objects, "progress": progress})


def _resolve(cfg: AtlasConfig) -> Path | None:
    return resolve_resume(cfg, DistInfo())


def _sharded(optimizer: torch.optim.Optimizer) -> Strategy:
    return cast("Strategy", _ShardedStrategy(optimizer))


def _names(run: Path) -> list[str]:
    return sorted(p.name for p in run.iterdir() if p.name.startswith("iter_"))


def test_layout_and_safe_loading(tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(toy_config(run), total=4)
    ckpt = run / "iter_00000004"
    assert (run / layout.LAST).read_text().strip() == ckpt.name  # a name: the run can move
    expected = {
        "model.safetensors",
        "optimizer.pt",
        "scheduler.pt",
        "sampler.pt",
        "rng.pt",
        "progress.pt",
        "meta.json",
        "config.yaml",
        "COMPLETE.json",
    }
    assert {p.name for p in ckpt.iterdir()} == expected
    # Frozen backbone left out, trainable head + buffers in.
    keys = set(load_file(str(ckpt / "model.safetensors")))
    assert "calls" in keys and "head.0.weight" in keys and "backbone.weight" not in keys
    for f in ckpt.glob("*.pt"):  # no arbitrary pickle anywhere
        torch.load(f, weights_only=True)
    meta = json.loads((ckpt / "meta.json").read_text())
    assert meta["batch"] == {"per_device": 4, "world_size": 1, "grad_accum": 2, "effective": 8}
    assert meta["progress"]["step"] == 4 and meta["per_rank"] == ["rng"]
    marker = json.loads((ckpt / layout.MARKER).read_text())
    assert set(marker["files"]) == expected - {"COMPLETE.json"}


def test_resume_is_bitwise_exact_in_process(tmp_path: Path) -> None:
    reference, _ = train(toy_config(tmp_path / "a"), total=12)
    train(toy_config(tmp_path / "b"), total=12, stop_at=7)  # last checkpoint: step 6
    resumed, progress = train(toy_config(tmp_path / "b"), total=12, workers=2)
    assert progress.step == 12
    assert same_weights(reference, resumed)


def test_retention_keeps_newest_best_and_last(tmp_path: Path) -> None:
    cfg = toy_config(tmp_path, save_interval=1, max_keep_ckpts=2)
    progress = TrainProgress(best_step=2, best_val_loss=0.5)
    manager = _manager(cfg, progress)
    for step in range(1, 7):
        progress.step = step
        manager.save(step, SaveReason.INTERVAL)
    assert _names(tmp_path) == ["iter_00000002", "iter_00000005", "iter_00000006"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_save_is_due_on_interval_epoch_end_and_force(tmp_path: Path) -> None:
    cfg = toy_config(tmp_path, save_interval=3, save_on_epoch_end=False)
    p = TrainProgress(step=2)
    manager = _manager(cfg, p)
    assert manager.save(2, SaveReason.INTERVAL) is None
    assert manager.save(2, SaveReason.EPOCH_END) is None
    assert manager.save(2, SaveReason.PREEMPTION) is not None
    p.step = 3
    path = manager.save(3, SaveReason.INTERVAL)
    assert path == tmp_path / "iter_00000003"
    assert json.loads((path / layout.META).read_text())["reason"] == "interval"
    cfg.checkpoint.save_on_epoch_end = True
    p.step = 4
    assert manager.save(4, SaveReason.EPOCH_END) is not None
    with pytest.raises(ValueError, match="progress is at 4"):
        manager.save(5, SaveReason.FINAL)


def test_corrupt_checkpoint_falls_back(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    train(toy_config(tmp_path, max_keep_ckpts=3), total=6)
    newest = tmp_path / "iter_00000006" / "optimizer.pt"
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, different content: only the checksum sees it
    newest.write_bytes(bytes(data))
    with caplog.at_level(logging.INFO):
        assert _resolve(toy_config(tmp_path)) == tmp_path / "iter_00000004"
    assert "optimizer.pt: sha256 mismatch" in caplog.text and "falling back" in caplog.text
    assert f"Auto resumed from the latest checkpoint {tmp_path / 'iter_00000004'}." in caplog.text
    # Truncated file: caught by size; an explicit PATH is never silently replaced.
    model = tmp_path / "iter_00000004" / "model.safetensors"
    model.write_bytes(model.read_bytes()[:-10])
    with pytest.raises(CheckpointError, match="model.safetensors"):
        _resolve(toy_config(tmp_path, resume=str(model.parent)))
    assert _resolve(toy_config(tmp_path)) == tmp_path / "iter_00000002"


def test_auto_without_checkpoint_starts_fresh(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        assert _resolve(toy_config(tmp_path)) is None
    assert "starting from scratch" in caplog.text


def test_resume_from_run_dir_and_stale_leftovers(tmp_path: Path) -> None:
    train(toy_config(tmp_path), total=4)
    (tmp_path / ".tmp-iter_00000006-999").mkdir()  # a save killed half-way
    cfg = toy_config(tmp_path / "elsewhere", resume=str(tmp_path))
    assert _resolve(cfg) == tmp_path / "iter_00000004"
    _resolve(toy_config(tmp_path))
    assert not (tmp_path / ".tmp-iter_00000006-999").exists()


def test_load_weights_only(tmp_path: Path) -> None:
    trained, _ = train(toy_config(tmp_path / "a"), total=4)
    cfg = toy_config(tmp_path / "a")
    CheckpointManager(cfg, DistInfo(), trained, {"progress": TrainProgress()}).export("final")
    for source in ("a/iter_00000004", "a/final", "a"):
        cfg = toy_config(
            tmp_path / source.replace("/", "_"), resume=None, load_from=str(tmp_path / source)
        )
        model, progress = train(cfg, total=0)  # total=0: load, do not train
        assert same_weights(model, trained) and progress.step == 0


def test_refuses_changed_effective_batch(tmp_path: Path) -> None:
    train(toy_config(tmp_path), total=4)
    cfg = toy_config(tmp_path)
    cfg.data.batch_size = 8  # 8 x 1 x 2 = 16 instead of 8
    with pytest.raises(CheckpointError) as err:
        train(cfg, total=6)
    text = str(err.value)
    for part in (
        "4 per device x 1 process(es) x 2 accumulation = 8",
        "8 per device x 1 process(es) x 2 accumulation = 16",
        "checkpoint.allow_batch_change: true",
        "step 4 becomes 2",
        "schedule",
    ):
        assert part in text
    cfg.checkpoint.allow_batch_change = True
    model, objects = build(cfg, DistInfo(), total=6)
    progress = TrainProgress()
    manager = CheckpointManager(cfg, DistInfo(), model, {**objects, "progress": progress})
    manager.load(tmp_path / "iter_00000004")
    assert progress.step == 32 // 16 and progress.samples_seen == 32
    assert objects["scheduler"].last_epoch == 2


def test_equal_effective_batch_resumes_silently(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    train(toy_config(tmp_path), total=3, stop_at=3)  # no save at 3: resume from step 2
    cfg = toy_config(tmp_path)
    cfg.data.batch_size, cfg.training.gradient_accumulation_steps = 2, 4  # still 8
    with caplog.at_level(logging.WARNING):
        _, progress = train(cfg, total=4)
    assert progress.step == 4
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_changed_frozen_weights_are_refused(tmp_path: Path) -> None:
    train(toy_config(tmp_path), total=2)
    model = ToyModel()
    with torch.no_grad():
        model.backbone.weight.add_(1.0)  # "a different pretrained file"
    manager = CheckpointManager(toy_config(tmp_path), DistInfo(), model, _progress())
    with pytest.raises(CheckpointError, match="model.vggt.checkpoint or the language encoder"):
        manager.load(tmp_path / "iter_00000002")
    seeded = toy_config(tmp_path)
    seeded.training.seed = 7  # a random-init frozen part is a function of the seed
    manager = CheckpointManager(seeded, DistInfo(), model, _progress())
    with pytest.raises(CheckpointError, match="training.seed changed from 42 to 7"):
        manager.load(tmp_path / "iter_00000002")


def test_inspect_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    train(toy_config(tmp_path), total=4)
    parser = argparse.ArgumentParser()
    add_ckpt_subcommands(parser)
    args = parser.parse_args(["inspect", str(tmp_path)])
    assert args.handler(args) == 0
    out = capsys.readouterr().out
    for part in (
        "step         4",
        "4 per device x 1 process(es) x 2 accumulation = 8",
        "world size   1",
        "model.safetensors",
        "status       complete",
    ):
        assert part in out
    args = parser.parse_args(["inspect", str(tmp_path / "iter_00000004"), "--json"])
    assert args.handler(args) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["step"] == 4 and info["effective_batch"]["effective"] == 8
    (tmp_path / "iter_00000004" / "rng.pt").write_bytes(b"x")
    assert args.handler(args) == 1


class _ShardedStrategy:
    """Stands in for FSDP2 / DeepSpeed: writes model + optimizer in its own format."""

    name = "fake_sharded"
    owns_model_state = True
    pickle_globals = ()

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer

    def save_state(self, directory: Path, model: torch.nn.Module) -> None:
        state = {"model": model.state_dict(), "optimizer": self.optimizer.state_dict()}
        torch.save(state, directory / "shards.pt")

    def load_state(self, directory: Path, model: torch.nn.Module) -> None:
        state = torch.load(directory / "shards.pt", weights_only=True)
        model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])

    def export_state_dict(self, model: torch.nn.Module) -> None:
        return None


def test_sharded_strategy_owns_model_and_optimizer(tmp_path: Path) -> None:
    cfg = toy_config(tmp_path)
    trained, objects = build(cfg, DistInfo(), total=4)
    states = {**objects, "progress": TrainProgress(step=2)}
    manager = CheckpointManager(cfg, DistInfo(), trained, states, _sharded(objects["optimizer"]))
    path = manager.save(2, SaveReason.FINAL)
    assert path is not None
    names = {p.name for p in path.iterdir()}
    assert "shards.pt" in names and not {"model.safetensors", "optimizer.pt"} & names
    assert "shards.pt" in json.loads((path / layout.MARKER).read_text())["files"]
    model, fresh = build(cfg, DistInfo(), total=4)
    with torch.no_grad():
        model.head[0].weight.add_(1.0)
    fresh_states = {**fresh, "progress": TrainProgress()}
    restored = CheckpointManager(cfg, DistInfo(), model, fresh_states, _sharded(fresh["optimizer"]))
    restored.load(path)
    assert same_weights(model, trained)
    with pytest.raises(CheckpointError, match="fake_sharded"):  # saved sharded, loaded plain
        CheckpointManager(cfg, DistInfo(), model, fresh_states).load(path)


@pytest.mark.parametrize(
    "pointer",
    ["binary", "empty", "directory", "other_run", "not_a_checkpoint"],
)
def test_untrustworthy_pointer_is_ignored(
    tmp_path: Path, pointer: str, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture
) -> None:
    other = tmp_path / "other"
    train(toy_config(other), total=2)
    run = tmp_path / "run"
    shutil.copytree(other, run)  # a copied run directory ...
    train(toy_config(run), total=4)  # ... that trained on: its own iter_4 is the newest
    last = run / layout.LAST
    last.unlink()
    if pointer == "binary":
        last.write_bytes(bytes(range(256)) * 2)
    elif pointer == "empty":
        last.write_text("")
    elif pointer == "directory":
        last.mkdir()
    elif pointer == "other_run":  # as older versions wrote it: an absolute path
        last.write_text(f"{(other / 'iter_00000002').resolve()}\n")
    else:
        last.write_text("../../etc\n")
    with caplog.at_level(logging.WARNING):
        assert _resolve(toy_config(run)) == run / "iter_00000004"
    assert "Ignoring the pointer" in caplog.text
    parser = argparse.ArgumentParser()
    add_ckpt_subcommands(parser)
    args = parser.parse_args(["inspect", str(run)])
    assert args.handler(args) == 0
    out = capsys.readouterr().out
    assert f"resume auto  {run / 'iter_00000004'}" in out and "last         ignored: " in out


def test_pointers_of_older_runs_and_moved_runs_keep_working(tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(toy_config(run), total=4, stop_at=2)  # iter_2 ... then the abandoned iter_4 below
    train(toy_config(run / "x"), total=4)
    shutil.move(run / "x" / "iter_00000004", run / "iter_00000004")  # newer, not pointed at
    (run / layout.LAST).write_text(f"{(run / 'iter_00000002').resolve()}\n")  # the old format
    assert _resolve(toy_config(run)) == run / "iter_00000002"
    moved = tmp_path / "moved"
    run.rename(moved)  # the absolute path no longer exists: the same name in the run dir
    assert _resolve(toy_config(moved)) == moved / "iter_00000002"
