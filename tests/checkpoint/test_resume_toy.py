"""SIGKILL at the worst moments of a save, then resume: the run ends bitwise where it would have.

A chain of toy-trainer processes (see _ckpt_toy.py; each a fresh interpreter),
each killed inside a different step of the checkpoint protocol: before COMPLETE.json, while
pruning, between the rename and the last_checkpoint update. The last one finishes; its weights
must equal an uninterrupted run's.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import torch
from _ckpt_toy import same_weights, toy_config, train

from atlas.checkpoint import layout
from atlas.checkpoint.resume import resolve_resume
from atlas.distributed.env import DistInfo

HERE = Path(__file__).resolve().parent


_CHILD = """
import sys, torch
from pathlib import Path
from _ckpt_toy import install_kill, toy_config, train
save_dir, kill, workers = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
if kill:
    install_kill(kill)
model, _ = train(toy_config(save_dir), 12, workers=workers)
torch.save(model.state_dict(), save_dir / "final_weights.pt")
"""


def _run(save_dir: Path, *extra: str) -> int:
    """The toy trainer in a fresh interpreter; returns its exit code (-9 when SIGKILLed).

    A fresh process, not os.fork(): a child forked from a pytest process whose torch thread
    pools are running can deadlock on a lock held by a thread that did not survive the fork.
    """
    kill = extra[extra.index("--kill-in") + 1] if "--kill-in" in extra else ""
    workers = extra[extra.index("--workers") + 1] if "--workers" in extra else "0"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
    }
    cmd = [sys.executable, "-c", _CHILD, str(save_dir), kill, workers]
    return subprocess.run(cmd, env=env, timeout=300).returncode


def _resolved(save_dir: Path) -> Path | None:
    return resolve_resume(toy_config(save_dir), DistInfo())


def test_sigkill_during_saves_then_resume_is_exact(tmp_path: Path) -> None:
    reference, _ = train(toy_config(tmp_path / "ref"), total=12)
    run = tmp_path / "run"
    killed = -signal.SIGKILL

    # 1. Killed after writing every file of iter_4 but before COMPLETE.json: iter_2 stays.
    assert _run(run, "--kill-in", "write_marker@4") == killed
    assert (run / layout.LAST).read_text().strip().endswith("iter_00000002")
    assert any(p.name.startswith(".tmp-iter_00000004") for p in run.iterdir())
    assert _resolved(run) == run / "iter_00000002"

    # 2. Resumed with 2 workers, killed while pruning iter_2 after saving iter_6.
    assert _run(run, "--kill-in", "remove_dir@2", "--workers", "2") == killed
    assert _resolved(run) == run / "iter_00000006"

    # 3. Killed after iter_10 was renamed into place, before last_checkpoint moved to it.
    assert _run(run, "--kill-in", "write_last@10") == killed
    assert (run / "iter_00000010" / layout.MARKER).is_file()
    assert _resolved(run) == run / "iter_00000008"  # the pointer wins; both are exact

    # 4. Uninterrupted to the end.
    assert _run(run) == 0
    final = torch.load(run / "final_weights.pt", weights_only=True)
    ref = reference.state_dict()
    assert final.keys() == ref.keys() and all(torch.equal(final[k], ref[k]) for k in ref)
    assert not [p for p in run.iterdir() if p.name.startswith(".")]  # leftovers cleaned


def test_sigkill_in_process_resume_same_as_uninterrupted(tmp_path: Path) -> None:
    """Resume from every checkpoint of one run gives the same final weights (no subprocess)."""
    reference, _ = train(toy_config(tmp_path / "ref"), total=8)
    for stop in (3, 5, 8):
        run = tmp_path / f"stop{stop}"
        train(toy_config(run), total=8, stop_at=stop)
        resumed, _ = train(toy_config(run), total=8)
        assert same_weights(reference, resumed), stop
