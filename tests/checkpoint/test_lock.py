"""One writer per run directory: a second launch stops (exit 2, naming the holder), the first is
untouched and ends bitwise like an undisturbed run; a killed holder leaves no stale lock."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from _tiny_run import tiny_config
from safetensors.torch import load_file

from atlas.checkpoint.lock import LOCK, RunDirInUseError, try_lock
from atlas.cli import main

ROOT = Path(__file__).resolve().parents[2]
HOLD = "import sys, time; from pathlib import Path; from atlas.checkpoint.lock import try_lock\n"
HOLD += "h = try_lock(Path(sys.argv[1])); print('locked', flush=True); time.sleep(600)"


def _holder(save_dir: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(save_dir)], env=env, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def test_second_lock_names_the_holder_and_a_killed_holder_frees_it(tmp_path: Path) -> None:
    holder = _holder(tmp_path)
    try:
        with pytest.raises(RunDirInUseError) as err:
            try_lock(tmp_path)
        text = str(err.value)
        assert str(tmp_path) in text and f"pid {holder.pid}" in text
        assert f"host {socket.gethostname()}" in text
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    handle = try_lock(tmp_path)  # the OS released the dead holder's lock: nothing stale
    assert json.loads((tmp_path / LOCK).read_text())["pid"] == os.getpid()
    handle.close()


def _launch(config: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    entry = [sys.executable, str(ROOT / "atlas" / "train.py"), "--config", str(config)]
    with open(log, "wb") as out:
        return subprocess.Popen([*entry, "--no-progress"], env=env, stdout=out, stderr=out)


def _wait_for_lock(run: Path, proc: subprocess.Popen[bytes], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        lock = run / LOCK
        if lock.is_file() and f'"pid": {proc.pid}' in lock.read_text():
            return
        time.sleep(0.2)
    raise AssertionError(f"the first run never took its lock (exit {proc.poll()})")


def _listing(run: Path) -> dict[str, int]:
    return {p.relative_to(run).as_posix(): p.stat().st_size for p in run.rglob("*") if p.is_file()}


def test_two_runs_on_one_save_dir(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = tmp_path / "data"
    first, reference = tmp_path / "first", tmp_path / "reference"
    ref = _launch(tiny_config(reference, data, steps=4), tmp_path / "reference.log")
    assert ref.wait(timeout=600) == 0  # also generates the synthetic data for both
    run = _launch(tiny_config(first, data, steps=4), tmp_path / "first.log")
    try:
        _wait_for_lock(first, run)
        run.send_signal(signal.SIGSTOP)  # held mid-run, wherever it is (a save, maybe)
        before = _listing(first)
        second = tiny_config(tmp_path / "second", data, steps=4)
        code = main(["train", "--config", str(second), "--set", f"checkpoint.save_dir={first}"])
        assert code == 2
        assert f"checkpoint.save_dir {first} is in use by another run (pid {run.pid}" in caplog.text
        assert _listing(first) == before  # nothing deleted, nothing written
    finally:
        run.send_signal(signal.SIGCONT)
    assert run.wait(timeout=600) == 0, (tmp_path / "first.log").read_text()[-3000:]
    assert "in use" not in (first / "train.log").read_text()
    assert sorted(p.name for p in first.glob("iter_*")) == ["iter_00000002", "iter_00000004"]
    assert main(["ckpt", "inspect", str(first)]) == 0
    got = load_file(str(first / "final" / "model.safetensors"))
    want = load_file(str(reference / "final" / "model.safetensors"))
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in got)
