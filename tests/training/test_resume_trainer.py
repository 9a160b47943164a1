"""The real trainer, interrupted and resumed: final weights bitwise equal to an uninterrupted run.

Each run is `python atlas/train.py --config X` in a subprocess on a tiny CPU config with dropout,
augmentation and gradient accumulation 2. A chain of launches is interrupted at random steps
(SIGTERM: graceful, must exit 0 with a checkpoint; SIGKILL at a random moment; SIGKILL while a
checkpoint is being written) and restarted with `resume: auto`, alternating num_workers 0 and 2;
the reference runs meanwhile. The random choices come from ATLAS_TEST_SEED (printed on failure).
Every process runs with one intra-op thread so that the float reductions are the same in all.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[2]
SEED = int(os.environ.get("ATLAS_TEST_SEED", time.time_ns() % 100_000))
TOTAL = 14  # optimizer steps; 10 per epoch, so the runs cross an epoch boundary

CONFIG = """
model:
  vggt: {{preset: {preset}, layers: [-1]}}
  language_encoder: {{name_or_path: minilm, pooling: mean, dtype: fp32}}
  geometry: {{tokens_per_frame: 4}}
  fusion: {{dim: 32, depth: 1, num_heads: 4, dropout: 0.2}}
  action_head: {{chunk_size: 2, hidden_dim: 32, use_proprio: true}}
data:
  paths: [{data}]
  synthetic: {{tasks: 2, demos: 3, steps: 8, image_size: 32}}
  cameras: [agentview_rgb]
  image_size: 28
  batch_size: 2
  num_workers: {workers}
  pin_memory: false
  val_split: 0.2
  augmentation: {{enabled: true, shift_pixels: 2}}
training:
  max_steps: {total}
  gradient_accumulation_steps: 2
  warmup_steps: 2
  log_interval: 1
  val_interval: 1000
  mixed_precision: fp32
checkpoint:
  save_dir: {save_dir}
  save_interval: 2
  max_keep_ckpts: 2
  resume: auto
logging: {{tensorboard: false, progress: false}}
"""


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic dataset, generated once (concurrent runs must not race to create it)."""
    from atlas.config.schema import SyntheticConfig
    from atlas.data.build import ensure_synthetic

    path = tmp_path_factory.mktemp("data") / "synth"
    ensure_synthetic(path, SyntheticConfig(tasks=2, demos=3, steps=8, image_size=32))
    return path


def _preset() -> str:
    from atlas.config.vggt import VGGT_PRESETS

    return "debug" if "debug" in VGGT_PRESETS else "tiny"


def _config(path: Path, data: Path, save_dir: Path, workers: int = 0, total: int = TOTAL) -> Path:
    text = CONFIG.format(
        preset=_preset(), data=data, save_dir=save_dir, workers=workers, total=total
    )
    path.write_text(text)
    return path


def _launch(config: Path, log: Path, ddp: bool = False) -> subprocess.Popen[bytes]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    env.pop("RANK", None)
    entry = [str(ROOT / "atlas" / "train.py"), "--config", str(config), "--no-progress"]
    launcher = (
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
        if ddp
        else [sys.executable]
    )
    out = open(log, "ab")  # noqa: SIM115 - closed with the process below
    return subprocess.Popen(
        [*launcher, *entry], env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
    )


def _wait(proc: subprocess.Popen[bytes], timeout: float = 300) -> int:
    try:
        return proc.wait(timeout=timeout)
    finally:
        _signal_tree(proc.pid, signal.SIGKILL)  # stragglers: torchrun workers, loader workers


def _signal_tree(pid: int, sig: signal.Signals) -> None:
    """Send `sig` to `pid` and all its descendants (torchrun starts workers in new sessions, and
    loader workers leave the process group, so a group signal would not reach them all)."""
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
            os.kill(p, sig)
        except ProcessLookupError:
            pass


def _steps_logged(log: Path, offset: int) -> int:
    """Highest `step N/` line the trainer logged since byte `offset` of its console log."""
    text = log.read_bytes()[offset:].decode(errors="replace")
    steps = [int(part.split("/")[0]) for part in text.split("| step ")[1:] if part[0].isdigit()]
    return max(steps, default=0)


def _interrupt(proc: subprocess.Popen[bytes], log: Path, run: Path, mode: str, step: int) -> int:
    """Let `proc` reach `step` (or, for "save", start writing a checkpoint), then signal it.

    term / int: SIGTERM / SIGINT to the process group, as a launcher or a terminal sends them;
    kill: SIGKILL to every process of the run, some time inside the step after `step`.
    """
    offset = log.stat().st_size if log.exists() else 0
    stale = set(run.glob(".tmp-iter_*"))  # a previous kill's leftovers are no trigger
    rng = random.Random(SEED + step)
    while proc.poll() is None:
        if mode == "save" and set(run.glob(".tmp-iter_*")) - stale:
            _signal_tree(proc.pid, signal.SIGKILL)
            break
        if mode != "save" and _steps_logged(log, offset) >= step:
            time.sleep(rng.uniform(0.0, 0.3))
            if mode in ("term", "int"):
                os.killpg(proc.pid, signal.SIGTERM if mode == "term" else signal.SIGINT)
            else:
                _signal_tree(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.002)
    return _wait(proc)


def _chain(tmp_path: Path, data: Path, plan: list[tuple[str, int, int]], total: int) -> Path:
    """Launch, interrupt per `plan` ((mode, num_workers, step) each), then run to the end."""
    run, log = tmp_path / "run", tmp_path / "run.log"
    probe = _config(tmp_path / "probe.yaml", data, run, total=total)
    resumable = 0  # launches that found a checkpoint to resume from
    for i, (mode, workers, step) in enumerate(plan):
        before = _resolve(probe)
        resumable += before is not None
        proc = _launch(_config(tmp_path / f"{i}.yaml", data, run, workers, total), log)
        rc = _interrupt(proc, log, run, mode, step)
        where = f"ATLAS_TEST_SEED={SEED}, launch {i} ({mode}), see {log}"
        assert not (run / "final").exists(), f"{where}: the interruption came too late"
        if mode in ("term", "int"):
            assert rc == 0 and "Preempted at step" in log.read_text(), where
        else:
            assert rc in (-signal.SIGKILL, 128 + signal.SIGKILL), where
        if mode == "save":  # killed while writing: the previous checkpoint is still the one
            assert _resolve(probe) == before, where
    resumable += _resolve(probe) is not None
    last = _launch(_config(tmp_path / "last.yaml", data, run, 0, total), log)
    assert _wait(last) == 0, log.read_text()[-3000:]
    resumed = log.read_text().count("Auto resumed from the latest checkpoint")
    assert resumed == resumable >= 1, f"ATLAS_TEST_SEED={SEED}: resumed {resumed} times"
    return run


def _resolve(config: Path) -> Path | None:
    from atlas.checkpoint.resume import resolve_resume
    from atlas.config.loader import load_config
    from atlas.distributed.env import DistInfo

    return resolve_resume(load_config(config), DistInfo())


def _final_weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "final" / "model.safetensors"))


def _differences(a: Path, b: Path) -> list[str]:
    wa, wb = _final_weights(a), _final_weights(b)
    assert wa.keys() == wb.keys()
    return [k for k in wa if not torch.equal(wa[k], wb[k])]


def _assert_exact(ref_config: Path, ref_dir: Path, run: Path, ddp: bool = False) -> None:
    """The resumed run's final weights equal the uninterrupted run's, bit for bit.

    If they differ, a second uninterrupted run arbitrates: a mismatch is only a resume bug when
    the uninterrupted runs agree with each other (CPU kernels are deterministic here, but a
    resume test must not fail for a reference that is not reproducible).
    """
    different = _differences(ref_dir, run)
    if not different:
        return
    again = ref_dir.with_name(ref_dir.name + "_again")
    config = ref_config.with_name("again.yaml")
    config.write_text(ref_config.read_text().replace(f"save_dir: {ref_dir}", f"save_dir: {again}"))
    assert _wait(_launch(config, ref_dir.with_name("again.log"), ddp=ddp)) == 0
    refs_agree = not _differences(ref_dir, again)
    assert not refs_agree and not _differences(again, run), (
        f"ATLAS_TEST_SEED={SEED}: resumed weights differ in {different[:5]}"
        + ("" if refs_agree else " (and the two uninterrupted runs differ too)")
    )
    warnings.warn(
        "the first uninterrupted run was not reproducible; a second matched", stacklevel=2
    )


def test_kill_and_resume_is_bitwise_exact(tmp_path: Path, data_dir: Path) -> None:
    """Three interruptions: SIGTERM (graceful), SIGKILL anywhere, SIGKILL during a save."""
    ref_dir = tmp_path / "ref"
    ref_cfg = _config(tmp_path / "ref.yaml", data_dir, ref_dir)
    reference = _launch(ref_cfg, tmp_path / "ref.log")
    rng = random.Random(SEED)
    plan = [("term", 2, rng.randint(1, 4)), ("kill", 0, rng.randint(6, 9)), ("save", 2, 0)]
    run = _chain(tmp_path, data_dir, plan, TOTAL)
    assert _wait(reference) == 0, (tmp_path / "ref.log").read_text()[-3000:]
    _assert_exact(ref_cfg, ref_dir, run)


@pytest.mark.slow
def test_many_random_interruptions(tmp_path: Path, data_dir: Path) -> None:
    """Eight interruptions of random kinds at random steps of a longer run."""
    total, rng = 40, random.Random(SEED)
    ref_dir = tmp_path / "ref"
    ref_cfg = _config(tmp_path / "ref.yaml", data_dir, ref_dir, total=total)
    reference = _launch(ref_cfg, tmp_path / "ref.log")
    steps = sorted(rng.sample(range(1, total - 2), 8))
    modes = ["term", "int", "kill", "save"]
    plan = [(rng.choice(modes), rng.choice([0, 2]), step) for step in steps]
    run = _chain(tmp_path, data_dir, plan, total)
    assert _wait(reference) == 0
    _assert_exact(ref_cfg, ref_dir, run)


def test_ddp_two_processes_resume_exactly(tmp_path: Path, data_dir: Path) -> None:
    ref_dir, run = tmp_path / "ref", tmp_path / "run"
    ref_log, log = tmp_path / "ref.log", tmp_path / "run.log"
    ref_cfg = _config(tmp_path / "ref.yaml", data_dir, ref_dir)
    reference = _launch(ref_cfg, ref_log, ddp=True)
    step = random.Random(SEED).randint(3, 8)
    proc = _launch(_config(tmp_path / "run.yaml", data_dir, run), log, ddp=True)
    assert _interrupt(proc, log, run, "kill", step) != 0
    assert not (run / "final").exists(), f"ATLAS_TEST_SEED={SEED}: the kill came too late"
    assert _wait(_launch(_config(tmp_path / "run.yaml", data_dir, run), log, ddp=True)) == 0
    assert _wait(reference) == 0, ref_log.read_text()[-3000:]
    assert "Auto resumed from the latest checkpoint" in log.read_text()
    _assert_exact(ref_cfg, ref_dir, run, ddp=True)
