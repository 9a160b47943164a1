"""The real trainer under torchrun (2 CPU processes, gloo) with fsdp2 and deepspeed: SIGKILL the
whole job after its first checkpoint, resume with `resume: auto`, and end bitwise where an
uninterrupted run ends. bf16 autocast, VGGT unfrozen (FSDP2 shards its blocks; the frozen,
cached language encoder stays replicated), gradient accumulation 2 with a partial window at the
epoch end, and a validation split that gives the two ranks unequal numbers of batches."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from _launch import ROOT, child_env, torchrun_cmd
from safetensors.torch import load_file

TOTAL = 8  # optimizer steps; 6 per epoch, so the runs cross an epoch boundary

CONFIG = """
model:
  vggt: {{preset: tiny, layers: [-1], freeze: false}}
  language_encoder: {{name_or_path: minilm, pooling: mean, dtype: fp32}}
  geometry: {{tokens_per_frame: 4}}
  fusion: {{dim: 32, depth: 2, num_heads: 4, dropout: 0.2}}
  action_head: {{chunk_size: 2, hidden_dim: 32, use_proprio: true}}
data:
  paths: [{data}]
  synthetic: {{tasks: 2, demos: 3, steps: 9, image_size: 32}}
  cameras: [agentview_rgb]
  image_size: 28
  batch_size: 2
  num_workers: 0
  pin_memory: false
  val_split: 0.2
training:
  strategy: {strategy}
  mixed_precision: bf16
  max_steps: {total}
  gradient_accumulation_steps: 2
  warmup_steps: 2
  log_interval: 1
  val_interval: 3
  fsdp: {{reshard_after_forward: true}}
checkpoint:
  save_dir: {save_dir}
  save_interval: 2
  max_keep_ckpts: 2
  resume: auto
logging: {{tensorboard: false, progress: false}}
"""


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from atlas.config.schema import SyntheticConfig
    from atlas.data.build import ensure_synthetic

    path = tmp_path_factory.mktemp("data") / "synth"
    ensure_synthetic(path, SyntheticConfig(tasks=2, demos=3, steps=9, image_size=32))
    return path


def _launch(tmp: Path, name: str, data: Path, strategy: str) -> subprocess.Popen[bytes]:
    config = tmp / f"{name}.yaml"
    save_dir = tmp / name
    config.write_text(CONFIG.format(data=data, strategy=strategy, total=TOTAL, save_dir=save_dir))
    entry = [str(ROOT / "atlas" / "train.py"), "--config", str(config), "--no-progress"]
    log = open(tmp / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        torchrun_cmd(entry),
        cwd=ROOT,
        env=child_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _kill_tree(pid: int) -> None:
    """SIGKILL `pid` and every descendant (the torchrun agent and its workers): a dead node."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    todo = [pid]
    while todo:
        p = todo.pop()
        todo += children.get(p, [])
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _wait(proc: subprocess.Popen[bytes], log: Path, timeout: float = 600) -> None:
    try:
        rc = proc.wait(timeout=timeout)
    finally:
        _kill_tree(proc.pid)
    assert rc == 0, log.read_text()[-4000:]


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["fsdp2", "deepspeed"])
def test_trainer_killed_and_resumed_is_bitwise_exact(
    strategy: str, tmp_path: Path, data_dir: Path
) -> None:
    if strategy == "deepspeed" and importlib.util.find_spec("deepspeed") is None:
        pytest.skip("deepspeed is not installed (pip install deepspeed)")
    reference = _launch(tmp_path, "ref", data_dir, strategy)
    run = _launch(tmp_path, "run", data_dir, strategy)
    while run.poll() is None and not (tmp_path / "run" / "last_checkpoint").exists():
        time.sleep(0.05)
    _kill_tree(run.pid)  # some moment after the first complete checkpoint
    assert not (tmp_path / "run" / "final").exists(), "the kill came too late"
    resumed = _launch(tmp_path, "run", data_dir, strategy)
    _wait(resumed, tmp_path / "run.log")
    _wait(reference, tmp_path / "ref.log")
    assert "Auto resumed from the latest checkpoint" in (tmp_path / "run.log").read_text()
    a = load_file(str(tmp_path / "ref" / "final" / "model.safetensors"))
    b = load_file(str(tmp_path / "run" / "final" / "model.safetensors"))
    assert a.keys() == b.keys()
    assert not [k for k in a if not torch.equal(a[k], b[k])]
