"""Shared torchrun runs of the toy (tests/distributed/_toy.py): launched once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
from _launch import TOY, run, torchrun_cmd

STEPS, SAVE_AT, KILL_AT = 6, 3, 4


def kill_and_resume(root: Path, strategy: str, extra: list[str]) -> Path:
    """Two launches: save at SAVE_AT then SIGKILL; resume to STEPS, then an uninterrupted run.

    Returns `root`: root/run/iter_3/ (checkpoint + full.pt), root/run/final.pt (resumed),
    root/ref/final.pt (uninterrupted).
    """
    common = [str(TOY), "--strategy", strategy, "--steps", str(STEPS), *extra]
    common += ["--run-dir", str(root / "run")]
    kill = ["--save-at", str(SAVE_AT), "--kill-at", str(KILL_AT)]
    killed = run(torchrun_cmd([*common, *kill]), expect_ok=False)
    assert killed.returncode != 0, "the run meant to be killed finished"
    ckpt = root / "run" / f"iter_{SAVE_AT}"
    assert ckpt.is_dir(), f"no checkpoint was written before the kill: {killed.stderr[-2000:]}"
    run(torchrun_cmd([*common, "--resume", str(ckpt), "--also-fresh", str(root / "ref")]))
    return root


# FSDP2 with every option that changes the code path: bf16 compute, ZeRO-3-like resharding,
# activation checkpointing. tests/distributed/test_multinode.py reuses the reference run.
FSDP2_ARGS = ["--precision", "bf16", "--zero3"]


@pytest.fixture(scope="session")
def fsdp2_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return kill_and_resume(tmp_path_factory.mktemp("fsdp2"), "fsdp2", FSDP2_ARGS)
