"""A rollout policy served elsewhere: the `RolloutPolicy` contract over openpi's websocket protocol.

    policy = RemotePolicy("ws://127.0.0.1:8000")     # `atlas serve`, or any openpi-protocol server
    policy.reset(); chunk = policy.predict_action(observation)      # float [H, 7]

It talks through the real `openpi_client.WebsocketClientPolicy` and sends AtlasVLA's own
observation keys unchanged (frames as the simulator renders them, the instruction, the state), plus
"reset": true on the first call of every episode so the server clears this connection's frame
history, which is what `policy.reset()` does in process. Same observations, same weights: the same
actions as the in-process rollout.
"""

from __future__ import annotations

from typing import Any

import numpy as np

INSTALL_HINT = (
    "the openpi client is not installed: pip install websockets msgpack && "
    "pip install --no-deps openpi-client==0.1.2"
)


class PolicyServerError(RuntimeError):
    """The server cannot be reached, refused us, or answered with an error."""


def _connect(url: str, api_key: str | None) -> Any:
    try:
        from openpi_client.websocket_client_policy import WebsocketClientPolicy
        from websockets.exceptions import InvalidStatus
    except ImportError as e:
        raise PolicyServerError(f"{INSTALL_HINT} ({e})") from e
    try:
        return WebsocketClientPolicy(url, api_key=api_key)
    except InvalidStatus as e:
        status = e.response.status_code
        hint = " (pass the server's key with --api-key)" if status == 401 else ""
        raise PolicyServerError(
            f"policy server {url} refused the connection: {status}{hint}"
        ) from e
    except (OSError, ValueError) as e:
        raise PolicyServerError(
            f"cannot reach a policy server at {url} ({e}); start one with "
            "`atlas serve --checkpoint DIR --port PORT`"
        ) from e


def server_metadata(url: str, api_key: str | None = None) -> dict[str, Any]:
    """The metadata the server sends first (checks that it is reachable); PolicyServerError."""
    policy = RemotePolicy(url, api_key)
    try:
        return policy.metadata
    finally:
        policy.close()


class RemotePolicy:
    """`reset()` / `predict_action(observation)` answered by a policy server (see the docstring)."""

    def __init__(self, url: str, api_key: str | None = None) -> None:
        self.url = url
        self._client = _connect(url, api_key)
        self.metadata: dict[str, Any] = self._client.get_server_metadata()
        self._new_episode = True

    def reset(self) -> None:
        """The next observation starts an episode: the server forgets this client's frames."""
        self._new_episode = True

    def predict_action(self, observation: dict[str, Any]) -> np.ndarray:
        from websockets.exceptions import ConnectionClosed

        message = {
            "images": observation["images"],
            "instruction": observation["instruction"],
            "state": observation["state"],
            "reset": self._new_episode,
        }
        try:
            reply = self._client.infer(message)
        except ConnectionClosed as e:
            raise PolicyServerError(f"policy server {self.url} closed the connection ({e})") from e
        except RuntimeError as e:  # openpi-client raises the server's error text frame
            raise PolicyServerError(f"policy server {self.url}: {e}") from e
        self._new_episode = False
        if not isinstance(reply, dict) or "actions" not in reply:
            raise PolicyServerError(f"policy server {self.url} replied without 'actions'")
        return np.asarray(reply["actions"])

    def close(self) -> None:
        self._client._ws.close()  # openpi-client has no public close; its socket is the only state
