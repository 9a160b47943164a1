"""`atlas rollout --server`: the rollout against `atlas serve` acts exactly as in process."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from _rollout_fakes import FakeEnvFactory

from atlas.eval import libero_env, libero_setup
from atlas.eval.policies import PolicySpec, RolloutPolicy
from atlas.eval.rollout import RolloutConfig, run_rollouts
from atlas.eval.rollout_cli import rollout_main
from atlas.eval.synthetic_env import SYNTHETIC_SUITE, SyntheticEnvFactory
from atlas.models.testing import export_tiny_policy
from atlas.serving.launch import ServerProcess, served

# openpi-client 0.1.2 calls websockets' connect() outside a `with`, which websockets >= 15 flags.
pytestmark = pytest.mark.filterwarnings("ignore:connect\\(\\) must be used:DeprecationWarning")
ATOL = 1e-5  # same weights and kernels (one thread each side), another process


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_tiny_policy(tmp_path_factory.mktemp("policy") / "final")


@pytest.fixture(scope="module")
def server(export: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the server: the in-process side must use the same kernels
    with served(export, "--threads", "1", log_dir=tmp_path_factory.mktemp("serve")) as s:
        yield s
    torch.set_num_threads(threads)


class Recording:
    """Wraps a policy and keeps every chunk it returned."""

    def __init__(self, policy: RolloutPolicy) -> None:
        self.policy, self.chunks = policy, []

    def reset(self) -> None:
        self.policy.reset()

    def predict_action(self, observation: dict[str, Any]) -> np.ndarray:
        self.chunks.append(np.asarray(self.policy.predict_action(observation)))
        return self.chunks[-1]


def _rollout(env_factory: Any, spec: PolicySpec, out: Path, **kw: Any) -> Recording:
    recording: list[Recording] = []

    def build() -> Recording:
        recording.append(Recording(spec()))
        return recording[0]

    config = RolloutConfig(out_dir=out, **{"suite": "libero_spatial", **kw})
    run_rollouts(config, env_factory, build, {"policy": spec.name})
    return recording[0]


def _episodes(out: Path) -> list[tuple[int, int, bool, int]]:
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    return sorted((r["task_id"], r["trial"], r["success"], r["steps"]) for r in rows)


def _assert_same(local: Recording, remote: Recording) -> None:
    assert len(local.chunks) == len(remote.chunks) > 0
    for a, b in zip(local.chunks, remote.chunks, strict=True):
        assert a.shape == b.shape == (4, 7)
        np.testing.assert_allclose(b, a, atol=ATOL)


def _assert_fake_env_rollouts_equal(export: Path, url: str, tmp_path: Path) -> None:
    """In process and through the server: the same chunks, executed actions and outcomes."""
    remote_spec = PolicySpec("server", server=url, served="x")
    kw = {"tasks": (0, 1), "trials": 2, "max_steps": 9, "replan_interval": 3}
    runs = {}
    for name, spec in (("local", PolicySpec("checkpoint", str(export))), ("remote", remote_spec)):
        factory = FakeEnvFactory(n_tasks=2, successes={1: {0}}, done_step=4)
        runs[name] = (_rollout(factory, spec, tmp_path / name, **kw), factory)
    (local, local_envs), (remote, remote_envs) = runs["local"], runs["remote"]
    _assert_same(local, remote)
    for a, b in zip(local_envs.envs, remote_envs.envs, strict=True):
        np.testing.assert_allclose(np.stack(b.actions), np.stack(a.actions), atol=ATOL)
    assert _episodes(tmp_path / "local") == _episodes(tmp_path / "remote")


def test_fake_env_rollout_equals_in_process(export, server, tmp_path) -> None:
    _assert_fake_env_rollouts_equal(export, server.url, tmp_path)


def test_served_lerobot_camera_keys_get_the_simulator_cameras(tmp_path) -> None:
    """A policy trained on a LeRobotDataset names its cameras by feature key; served, the rollout
    renames the simulator's frames for it exactly as in process."""
    cameras = ("observation.images.image", "observation.images.wrist_image")
    export = export_tiny_policy(tmp_path / "lerobot" / "final", cameras=cameras)
    with served(export, "--threads", "1", log_dir=tmp_path) as lerobot_server:
        _assert_fake_env_rollouts_equal(export, lerobot_server.url, tmp_path)


def test_synthetic_rollout_equals_in_process(export, server, tmp_path) -> None:
    """The synthetic world, where success depends on the actions: same chunks, same outcomes."""
    kw = {"tasks": (0, 1), "trials": 2, "max_steps": 12, "replan_interval": 4}
    factory = SyntheticEnvFactory(num_tasks_=2, image_size=32)
    config = {"suite": SYNTHETIC_SUITE, **kw}
    local = _rollout(factory, PolicySpec("checkpoint", str(export)), tmp_path / "a", **config)
    remote = _rollout(factory, PolicySpec("server", server=server.url), tmp_path / "b", **config)
    _assert_same(local, remote)
    assert _episodes(tmp_path / "a") == _episodes(tmp_path / "b")


@pytest.mark.slow  # two LIBERO envs (~1 min idle); CI covers the same path with the fake envs
@pytest.mark.skipif(
    libero_setup.unavailable_reason() is not None, reason=str(libero_setup.unavailable_reason())
)
def test_libero_rollout_equals_in_process(export, server, tmp_path) -> None:
    """One trial of libero_spatial task 0, 12 policy steps, in the real simulator."""
    kw = {"tasks": (0,), "trials": 1, "max_steps": 12, "replan_interval": 4}
    factory = libero_env.LiberoEnvFactory(image_size=128)
    local = _rollout(factory, PolicySpec("checkpoint", str(export)), tmp_path / "a", **kw)
    remote = _rollout(factory, PolicySpec("server", server=server.url), tmp_path / "b", **kw)
    _assert_same(local, remote)
    assert _episodes(tmp_path / "a") == _episodes(tmp_path / "b") == [(0, 0, False, 12)]


def _command_env_factory(image_size: int, instruction_source: str, assets: str | None) -> Any:
    """The fake env in place of `LiberoEnvFactory(image_size, instruction_source, assets)`."""
    factory = FakeEnvFactory(n_tasks=1)
    factory.instruction_source = instruction_source  # type: ignore[attr-defined]
    return factory


def test_rollout_command_with_server(server, tmp_path, monkeypatch, caplog) -> None:
    """`atlas rollout --server` end to end (the simulator replaced by the fake env)."""
    monkeypatch.setattr(libero_setup, "require_simulator", lambda: None)
    monkeypatch.setattr(libero_env, "LiberoEnvFactory", _command_env_factory)
    out = tmp_path / "out"
    argv = ["--server", server.url, "--suite", "libero_spatial", "--trials", "2"]
    argv += ["--max-steps", "5", "--videos", "0", "--out", str(out), "--no-progress"]
    assert rollout_main(argv) == 0
    assert [(t, i, s) for t, i, s, _ in _episodes(out)] == [(0, 0, False), (0, 1, False)]
    settings = json.loads((out / "rollout_config.json").read_text())
    # The server's address and the export it serves (from its metadata) identify the policy.
    assert settings["policy"].startswith(f"server:{server.url} (policy")
    assert settings["policy"].endswith("/final)")
    assert settings["instruction_source"] == "filename"  # from the server's metadata

    # The synthetic suite: the world comes from the server's metadata, no simulator needed.
    argv = ["--server", server.url, "--suite", "synthetic", "--tasks", "0", "--trials", "1"]
    argv += ["--max-steps", "4", "--videos", "0", "--out", str(tmp_path / "syn"), "--no-progress"]
    assert rollout_main(argv) == 0
    assert [(t, i) for t, i, _, _ in _episodes(tmp_path / "syn")] == [(0, 0)]

    assert rollout_main(["--server", "ws://127.0.0.1:9", "--suite", "libero_spatial"]) == 2
    assert "cannot reach a policy server at ws://127.0.0.1:9" in caplog.text
    both = ["--server", server.url, "--checkpoint", "x", "--suite", "libero_spatial"]
    assert rollout_main(both) == 2
    assert "give --server or --checkpoint, not both" in caplog.text
