"""Graceful stop on SIGTERM / SIGINT: finish the optimizer step, save, exit 0.

Clusters announce preemption with SIGTERM (SLURM, Kubernetes, torchrun's agent when it is
stopped) and people press Ctrl-C (SIGINT). The first signal only sets `requested`; the trainer
checks `should_stop(dist)` once per optimizer step, an all-reduce so every rank agrees on the same
step, then saves a checkpoint and returns normally. A second signal means "now": the process
exits at once with 128 + signal number, without saving.

A duplicate arriving within `grace_s` of the first is not a second request: under torchrun,
Ctrl-C reaches every worker directly (same process group) and again through the agent as
SIGTERM a moment later. torchrun's agent waits 30 s by default before it sends SIGKILL, so a
save must fit in that window (tune the launcher's grace period for large models).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from types import FrameType
from typing import Any

from atlas.distributed.env import DistInfo, any_rank

log = logging.getLogger(__name__)

DEFAULT_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class PreemptionHandler:
    """Installs handlers for `signals` on construction; `uninstall()` restores the old ones."""

    def __init__(
        self, signals: tuple[signal.Signals, ...] = DEFAULT_SIGNALS, grace_s: float = 1.0
    ) -> None:
        self.requested = False
        self.signal_name: str | None = None
        self.grace_s = grace_s
        self._first_at = 0.0
        self._previous: dict[signal.Signals, Any] = {}
        # Python only lets the main thread install handlers (e.g. not inside some test runners).
        if threading.current_thread() is not threading.main_thread():
            log.warning("Not in the main thread: SIGTERM/SIGINT will not stop training gracefully")
            return
        for sig in signals:
            self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        now = time.monotonic()
        if not self.requested:
            self.requested, self.signal_name, self._first_at = True, name, now
            log.warning(
                "%s received: finishing the current optimizer step, then saving a checkpoint and "
                "exiting (send it again to exit immediately without saving)",
                name,
            )
            return
        if now - self._first_at < self.grace_s:
            return  # the same request relayed by the launcher, see the module docstring
        log.error("Second signal (%s): exiting now without saving", name)
        logging.shutdown()  # flush the log files; nothing else runs after this
        os._exit(128 + signum)

    def should_stop(self, dist: DistInfo) -> bool:
        """Whether any rank was signalled. A collective: call it on every rank at the same step."""
        return any_rank(self.requested, dist.device)

    def uninstall(self) -> None:
        """Restore the handlers that were there before (tests, or a library embedding training)."""
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()

    def __enter__(self) -> PreemptionHandler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.uninstall()
