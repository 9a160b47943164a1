"""PreemptionHandler: the first SIGTERM/SIGINT asks for a graceful stop, a second one exits now."""

from __future__ import annotations

import os
import signal
import time

import pytest

from atlas.distributed.env import DistInfo
from atlas.training.preemption import PreemptionHandler


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_first_signal_requests_a_stop(sig: signal.Signals) -> None:
    before = signal.getsignal(sig)
    with PreemptionHandler() as handler:
        assert not handler.should_stop(DistInfo())
        os.kill(os.getpid(), sig)
        assert handler.requested and handler.signal_name == sig.name
        assert handler.should_stop(DistInfo())
    assert signal.getsignal(sig) is before


def test_second_signal_exits_at_once_but_a_relayed_duplicate_does_not() -> None:
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        try:
            handler = PreemptionHandler(grace_s=0.5)
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGTERM)  # torchrun relaying the same Ctrl-C: ignored
            time.sleep(0.6)
            if handler.requested:
                os.kill(os.getpid(), signal.SIGTERM)  # a real second request: exit now
                time.sleep(5)
        finally:
            os._exit(0)  # only reached if the second signal did not end the process
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 128 + signal.SIGTERM
