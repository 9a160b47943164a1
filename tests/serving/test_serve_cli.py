"""`atlas serve` as a command: API key, SIGTERM shutdown, and one-line refusals of bad options."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest
from _episodes import observations
from openpi_client.websocket_client_policy import WebsocketClientPolicy
from websockets.exceptions import ConnectionClosed, InvalidStatus

from atlas.eval.remote_policy import PolicyServerError, RemotePolicy
from atlas.serving.launch import served

pytestmark = pytest.mark.filterwarnings("ignore:connect\\(\\) must be used:DeprecationWarning")


def test_api_key_then_sigterm(tiny_export, tmp_path) -> None:
    (obs,) = observations(1, seed=0)
    with served(tiny_export, "--api-key", "s3cret", "--threads", "1", log_dir=tmp_path) as server:
        for key in (None, "wrong"):
            with pytest.raises(InvalidStatus) as refused:
                WebsocketClientPolicy(server.url, api_key=key)
            assert refused.value.response.status_code == 401
        with pytest.raises(PolicyServerError, match="refused the connection: 401.*--api-key"):
            RemotePolicy(server.url)
        client = WebsocketClientPolicy(server.url, api_key="s3cret")
        assert client.infer(obs)["actions"].shape == (4, 7)

        # SIGTERM with a client connected: exit 0, the client is told the server is going away.
        assert server.stop() == 0
        assert "server stopped" in server.log()
        with pytest.raises(ConnectionClosed) as closed:
            client.infer(obs)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
        assert "Traceback" not in server.log()


def _serve(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "atlas.cli", "serve", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def _assert_refused(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    """Exit 2, no traceback, nothing on stdout, and the last line names the problem."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    last = result.stderr.strip().splitlines()[-1]
    for needle in needles:
        assert needle in last, result.stderr


def test_bad_options_exit_2_with_one_line(tiny_export, tmp_path) -> None:
    _assert_refused(
        _serve("--checkpoint", str(tmp_path / "nope")), "--checkpoint", "no such directory"
    )
    _assert_refused(_serve("--checkpoint", str(tiny_export), "--port", "70000"), "--port")
    (tmp_path / "empty").mkdir()
    _assert_refused(_serve("--checkpoint", str(tmp_path / "empty")), "cannot load the policy")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        _assert_refused(
            _serve("--checkpoint", str(tiny_export), "--port", port), f"127.0.0.1:{port}", "--port"
        )
