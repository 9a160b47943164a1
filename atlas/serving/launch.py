"""Run `atlas serve` in a child process and wait for its address (tests, benchmarks, scripts).

with served(checkpoint, "--threads", "1") as server:
    client = WebsocketClientPolicy(server.url)
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


@dataclass
class ServerProcess:
    """A running `atlas serve`: its process, URL (ws://127.0.0.1:PORT) and log file (stderr)."""

    process: subprocess.Popen[str]
    url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, then wait; returns the exit code (kills it if it does not stop in time)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise


def start_server(
    checkpoint: str | Path, *args: str, log_dir: str | Path | None = None, timeout: float = 180.0
) -> ServerProcess:
    """Start `atlas serve --checkpoint DIR --port 0 ARGS` on loopback; return once it listens."""
    log_dir = Path(log_dir or tempfile.mkdtemp(prefix="atlas-serve-"))
    log_path = log_dir / "serve.log"
    command = [sys.executable, "-m", "atlas.cli", "serve", "--checkpoint", str(checkpoint)]
    command += ["--host", "127.0.0.1", "--port", "0", *args]
    with open(log_path, "w") as log_file:
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=log_file, text=True, env=dict(os.environ)
        )
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 1.0)
        if ready:
            line = process.stdout.readline().strip()
            if line.startswith("ws://"):
                return ServerProcess(process, line, log_path)
            if not line and process.poll() is not None:
                break  # it exited before listening
    process.kill()
    process.wait()
    raise RuntimeError(f"atlas serve did not start:\n{log_path.read_text(errors='replace')}")


@contextmanager
def served(
    checkpoint: str | Path, *args: str, log_dir: str | Path | None = None
) -> Iterator[ServerProcess]:
    """`start_server` as a context manager that always stops the server."""
    server = start_server(checkpoint, *args, log_dir=log_dir)
    try:
        yield server
    finally:
        if server.process.poll() is None:
            server.stop()
