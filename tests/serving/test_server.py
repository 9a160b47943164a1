"""`atlas serve` in a child process, driven through the real openpi-client on loopback."""

from __future__ import annotations

import threading
import urllib.request

import numpy as np
import pytest
from _episodes import in_process, observations
from openpi_client.websocket_client_policy import WebsocketClientPolicy
from websockets.sync.client import connect

from atlas.serving.codec import packb, unpackb

# openpi-client 0.1.2 calls websockets' connect() outside a `with`, which websockets >= 15 flags.
pytestmark = pytest.mark.filterwarnings("ignore:connect\\(\\) must be used:DeprecationWarning")
ATOL = 1e-5  # same weights, same kernels (one thread each side), another process


def _episode_over_the_wire(client: WebsocketClientPolicy, episode: list[dict]) -> list[np.ndarray]:
    return [client.infer({**obs, "reset": i == 0})["actions"] for i, obs in enumerate(episode)]


def test_metadata_comes_first(server, reference) -> None:
    meta = WebsocketClientPolicy(server.url).get_server_metadata()
    assert meta["policy"] == "atlas-vla" and meta["name"].endswith("/final")
    assert meta["action_horizon"] == reference.config.action_head.chunk_size == 4
    assert meta["cameras"] == ["agentview_rgb", "eye_in_hand_rgb"]
    assert meta["image_size"] == 56 and meta["history"] == 2 and meta["state_dim"] == 8
    assert "observation/image: uint8 [h, w, 3], rotated 180" in meta["expected_keys"]["openpi"]


def test_actions_equal_in_process(server, reference) -> None:
    episode = observations(3, seed=1)
    reply = WebsocketClientPolicy(server.url).infer({**episode[0], "reset": True})
    assert reply["actions"].shape == (4, 7) and reply["actions"].dtype == np.float32
    assert reply["server_timing"]["infer_ms"] > 0
    remote = _episode_over_the_wire(WebsocketClientPolicy(server.url), episode)
    for got, want in zip(remote, in_process(reference, episode), strict=True):
        np.testing.assert_allclose(got, want, atol=ATOL)
    # The history matters: the second step differs from a fresh start on the same frame.
    assert not np.allclose(remote[1], in_process(reference, episode[1:2])[0], atol=ATOL)


def test_openpi_libero_keys(server, reference) -> None:
    """openpi's LIBERO client: 180-degree-rotated frames, observation/* keys, prompt."""
    client = WebsocketClientPolicy(server.url)
    episode = observations(2, seed=2)
    for i, obs in enumerate(episode):
        images = obs["images"]
        message = {
            "observation/image": np.ascontiguousarray(images["agentview_rgb"][::-1, ::-1]),
            "observation/wrist_image": np.ascontiguousarray(images["eye_in_hand_rgb"][::-1, ::-1]),
            "observation/state": obs["state"].astype(np.float64),
            "prompt": obs["instruction"],
            "reset": i == 0,
        }
        want = in_process(reference, episode[: i + 1])[-1]
        np.testing.assert_allclose(client.infer(message)["actions"], want, atol=ATOL)


def test_garbage_gets_an_error_frame_and_the_server_keeps_serving(server) -> None:
    (obs,) = observations(1, seed=3)
    with connect(server.url) as ws:
        unpackb(ws.recv())  # metadata
        for garbage in (b"\xc1\xc1\xc1", "hello", packb([1, 2, 3]), packb({"images": 5})):
            ws.send(garbage)
            error = ws.recv()
            assert isinstance(error, str) and error.startswith("bad observation:"), error
        ws.send(packb(obs))  # the same connection still works
        assert unpackb(ws.recv())["actions"].shape == (4, 7)
    client = WebsocketClientPolicy(server.url)  # through openpi-client: it raises the text
    with pytest.raises(RuntimeError, match="lacks 'state'"):
        client.infer({k: v for k, v in obs.items() if k != "state"})
    assert client.infer(obs)["actions"].shape == (4, 7)
    with connect(server.url) as broken:  # a client that vanishes mid-request
        broken.recv()
        broken.send(packb(obs))
    assert WebsocketClientPolicy(server.url).infer(obs)["actions"].shape == (4, 7)
    assert server.process.poll() is None


def test_clients_at_once_keep_their_own_history(server, reference) -> None:
    a, b = observations(2, seed=4), observations(2, seed=5)
    ca, cb = WebsocketClientPolicy(server.url), WebsocketClientPolicy(server.url)
    got = {"a": [], "b": []}
    for i in range(2):  # interleaved: a0 b0 a1 b1
        got["a"].append(ca.infer({**a[i], "reset": i == 0})["actions"])
        got["b"].append(cb.infer({**b[i], "reset": i == 0})["actions"])
    for name, episode in (("a", a), ("b", b)):
        for g, w in zip(got[name], in_process(reference, episode), strict=True):
            np.testing.assert_allclose(g, w, atol=ATOL)

    episodes = [observations(2, seed=10 + k) for k in range(4)]
    results: dict[int, list[np.ndarray]] = {}

    def run(k: int) -> None:
        results[k] = _episode_over_the_wire(WebsocketClientPolicy(server.url), episodes[k])

    threads = [threading.Thread(target=run, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert sorted(results) == [0, 1, 2, 3]
    for k, episode in enumerate(episodes):
        np.testing.assert_allclose(results[k][-1], in_process(reference, episode)[-1], atol=ATOL)


def test_health_check(server) -> None:
    url = server.url.replace("ws://", "http://") + "/healthz"
    with urllib.request.urlopen(url, timeout=30) as response:
        assert response.status == 200 and response.read() == b"OK\n"
