"""A policy behind openpi's websocket protocol (`openpi_client.WebsocketClientPolicy` talks to it).

    client connects            (with the header `Authorization: Api-Key KEY` when a key is set)
    server -> metadata          msgpack map, `ServingSpec.metadata()`, the first message
    repeat:
      client -> observation     binary msgpack frame (keys: `atlas.serving.observation`)
      server -> reply           binary: {"actions": float32 [H, 7], "server_timing": {"infer_ms"}}
                                or, for a message the policy cannot act on, a text frame with the
                                error (openpi's client raises it); the connection stays open
    GET /healthz -> 200 "OK"    (no key needed)

Clients are served concurrently by one asyncio event loop, and the policy runs on a single worker
thread: inference is serialised, one observation at a time in arrival order, so one model on one
device is never entered twice. Each connection has its own frame history (the policy's
`new_history()`), so clients never see each other's frames. `run_server` stops cleanly on SIGTERM
or SIGINT: it stops accepting, lets the running inference finish, closes every connection with
1001 (going away) and returns.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from typing import Any, Protocol

import numpy as np
from websockets.asyncio.server import Request, Response, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from atlas.serving import codec
from atlas.serving.observation import ObservationError, ServingSpec, to_policy_observation

log = logging.getLogger(__name__)

# Far above any observation (two 256 px frames are 0.4 MB); a bigger message closes the
# connection with 1009 (message too big) instead of filling the server's memory.
MAX_MESSAGE_BYTES = 64 << 20
API_KEY_HEADER = "Authorization"


class ServedPolicy(Protocol):
    """What the server needs from a policy (`AtlasVLAPolicy` implements it)."""

    def new_history(self) -> Any: ...
    def predict_action(self, observation: dict[str, Any], history: Any = None) -> np.ndarray: ...


class PolicyServer:
    """Serves one policy to any number of clients; see the module docstring for the protocol."""

    def __init__(self, policy: ServedPolicy, spec: ServingSpec, api_key: str | None = None) -> None:
        self.policy, self.spec = policy, spec
        self._expected_auth = f"Api-Key {api_key}".encode() if api_key else None
        self._metadata = codec.packb(spec.metadata())
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="policy")

    def infer(self, history: Any, message: bytes | str) -> bytes:
        """One observation message -> one packed reply (runs on the policy thread).

        Raises ObservationError for a message the policy cannot act on.
        """
        if isinstance(message, str):
            raise ObservationError("expected a binary msgpack frame, got a text frame")
        try:
            decoded = codec.unpackb(message)
        except codec.CodecError as e:
            raise ObservationError(str(e)) from e
        observation, reset = to_policy_observation(decoded, self.spec)
        if reset:
            history.clear()
        start = time.perf_counter()
        actions = np.asarray(self.policy.predict_action(observation, history=history))
        infer_ms = (time.perf_counter() - start) * 1e3
        return codec.packb({"actions": actions, "server_timing": {"infer_ms": infer_ms}})

    async def handle(self, ws: ServerConnection) -> None:
        """One client connection: metadata, then one reply per message until it closes."""
        host, port = ws.remote_address[:2]
        peer = f"{host}:{port}"
        loop = asyncio.get_running_loop()
        history = self.policy.new_history()
        served = 0
        log.info("client %s connected", peer)
        try:
            await ws.send(self._metadata)
            async for message in ws:
                try:
                    reply = await loop.run_in_executor(self._executor, self.infer, history, message)
                except ObservationError as e:
                    log.warning("client %s: bad observation: %s", peer, e)
                    await ws.send(f"bad observation: {e}")
                    continue
                except Exception as e:  # a policy failure must not end the other clients' service
                    log.exception("client %s: the policy failed", peer)
                    await ws.send(f"policy error: {type(e).__name__}: {e}")
                    continue
                await ws.send(reply)
                served += 1
        except ConnectionClosed:
            pass  # the client went away mid-reply; nothing to clean up but the log line
        finally:
            log.info("client %s disconnected after %d observations", peer, served)

    def check_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """The opening handshake: /healthz, and the API key when one is set."""
        if request.path == "/healthz":
            return connection.respond(HTTPStatus.OK, "OK\n")
        if self._expected_auth is not None:
            got = request.headers.get(API_KEY_HEADER, "").encode()
            if not hmac.compare_digest(got, self._expected_auth):
                log.warning("refused a connection without the right API key")
                return connection.respond(
                    HTTPStatus.UNAUTHORIZED, "missing or wrong API key (Authorization: Api-Key)\n"
                )
        return None

    async def serve(
        self, host: str, port: int, stop: asyncio.Event, on_ready: Callable[[str], None]
    ) -> None:
        """Listen on host:port (0: a free port) until `stop` is set; `on_ready(url)` once bound."""
        async with serve(
            self.handle,
            host,
            port,
            compression=None,
            max_size=MAX_MESSAGE_BYTES,
            process_request=self.check_request,
        ) as server:
            bound_host, bound_port = next(iter(server.sockets)).getsockname()[:2]
            on_ready(f"ws://{_url_host(bound_host)}:{bound_port}")
            await stop.wait()
            log.info("stopping: no new connections; closing the open ones")
        # Leaving the block closed every connection and waited for their handlers.
        self._executor.shutdown(wait=True)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def run_server(server: PolicyServer, host: str, port: int, on_ready: Callable[[str], None]) -> None:
    """Serve until SIGTERM or SIGINT, then shut down cleanly (see the module docstring)."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await server.serve(host, port, stop, on_ready)

    asyncio.run(main())
    log.info("server stopped")
