"""Launch torchrun jobs from tests: one node with N processes, or several agents on localhost."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOY = Path(__file__).with_name("_toy.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env() -> dict[str, str]:
    """One intra-op thread (the same float reductions in every process), the repo importable."""
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), DS_ACCELERATOR="cpu")
    return env


def torchrun_cmd(
    args: list[str], nproc: int = 2, nodes: tuple[int, int] | None = None, port: int | None = None
) -> list[str]:
    """`python -m torch.distributed.run ...`: standalone, or node i of n via c10d on `port`."""
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}"]
    if nodes is None:
        cmd.append("--standalone")
    else:
        node, count = nodes
        cmd += [
            f"--nnodes={count}",
            f"--node_rank={node}",
            "--rdzv_backend=c10d",
            f"--rdzv_endpoint=127.0.0.1:{port}",
            "--rdzv_id=atlas-test",
            # Advertise loopback, not whatever the hostname resolves to in a sandbox.
            "--local-addr=127.0.0.1",
        ]
    return [*cmd, *args]


def run(
    cmd: list[str], timeout: float = 300, expect_ok: bool = True
) -> subprocess.CompletedProcess:
    """Run `cmd` with the test environment; on an unexpected exit code, fail with its output."""
    proc = subprocess.run(
        cmd, cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=timeout
    )
    if expect_ok and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}:\n{tail(proc)}")
    return proc


def tail(proc: subprocess.CompletedProcess, n: int = 60) -> str:
    lines = (proc.stdout + proc.stderr).splitlines()
    return "\n".join(lines[-n:])
