"""Resuming an iter_N checkpoint of the earlier frame-embedding layout.

Earlier GeometryEncoders held `history_embed` [history, dim] and `camera_embed` [cams, dim];
today they are the rows of `frame_embed`. The checkpoint here is written by the real manager
from a tiny policy turned back into that layout, so its model.safetensors holds the old names and
its optimizer.pt the old positions; resuming it into today's policy must carry the weights and
the AdamW moments over exactly, and the next step must be the one the old layout would take.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from atlas.checkpoint.compat import upgrade_optimizer_state
from atlas.checkpoint.manager import CheckpointManager, SaveReason
from atlas.checkpoint.state import TrainProgress
from atlas.config.schema import AtlasConfig
from atlas.data.normalization import Normalizer
from atlas.distributed.env import DistInfo
from atlas.models.config import policy_config
from atlas.models.geometry import GeometryEncoder
from atlas.models.policy import AtlasVLAPolicy, build_policy
from atlas.models.testing import make_fake_batch, stats_group, tiny_config
from atlas.safeload import load_pt
from atlas.training.optim import build_optimizer, build_scheduler

HISTORY, CAMERAS = 2, ("agentview_rgb", "eye_in_hand_rgb")
MOMENTS = ("exp_avg", "exp_avg_sq")


@dataclass
class Run:
    """A policy with its optimizer, schedule and progress, as the trainer holds them."""

    policy: AtlasVLAPolicy
    optimizer: torch.optim.AdamW
    scheduler: torch.optim.lr_scheduler.LambdaLR
    progress: TrainProgress

    def manager(self, cfg: AtlasConfig) -> CheckpointManager:
        states = {
            "optimizer": self.optimizer,
            "scheduler": self.scheduler,
            "progress": self.progress,
        }
        return CheckpointManager(cfg, DistInfo(), self.policy, states)

    def step(self, seed: int) -> torch.Tensor:
        """One optimizer step on a fake batch (no dropout in the tiny config: deterministic)."""
        self.optimizer.zero_grad(set_to_none=True)
        loss, _ = self.policy(make_fake_batch(self.policy.config, 2, seed=seed))
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        self.progress.step += 1
        self.progress.samples_seen += 2
        return loss.detach()


def _config(save_dir: Path) -> AtlasConfig:
    cfg = tiny_config(data={"cameras": list(CAMERAS), "history": HISTORY, "batch_size": 2})
    cfg.checkpoint.save_dir = str(save_dir)
    cfg.training.warmup_steps = 1  # a non-zero LR from the second step on
    return cfg


def _normalizer() -> Normalizer:
    def group(dim: int) -> dict[str, list[float]]:
        return stats_group([-2.0] * dim, [2.0] * dim)

    return Normalizer({"action": group(7), "proprio": group(8), "num_samples": 10}, "q99")


def _run(cfg: AtlasConfig, seed: int, earlier: bool = False) -> Run:
    torch.manual_seed(seed)
    policy = build_policy(policy_config(cfg), _normalizer())
    if earlier:
        _earlier_layout(policy.geometry)
    optimizer = build_optimizer(policy, cfg, 1, torch.device("cpu"))
    return Run(policy, optimizer, build_scheduler(optimizer, cfg, 10), TrainProgress())


def _earlier_layout(geometry: GeometryEncoder) -> None:
    """The encoder as it was before frame_embed: camera_embed, then history_embed, registered
    after slot_embed (so the optimizer holds them in that order), and summed per frame."""
    steps, cams = geometry.frame_embed.detach().split([geometry.history, geometry.num_cameras])
    del geometry.frame_embed
    geometry.camera_embed = nn.Parameter(cams.clone())
    geometry.history_embed = nn.Parameter(steps.clone())

    def frame_embed(num_frames: int) -> torch.Tensor:
        emb = geometry.history_embed[:, None] + geometry.camera_embed[None, :]
        return emb.reshape(num_frames, 1, -1)

    geometry._frame_embed = frame_embed  # type: ignore[method-assign]


@pytest.fixture(scope="module")
def earlier(tmp_path_factory: pytest.TempPathFactory) -> tuple[AtlasConfig, Run, Path]:
    """The earlier-layout run after 2 steps and its checkpoint iter_00000002."""
    cfg = _config(tmp_path_factory.mktemp("earlier") / "run")
    old = _run(cfg, seed=0, earlier=True)
    old.step(seed=0)
    old.step(seed=1)
    path = old.manager(cfg).save(old.progress.step, SaveReason.FINAL)
    assert path is not None
    keys = set(load_file(str(path / "model.safetensors")))
    assert {"geometry.history_embed", "geometry.camera_embed"} <= keys  # the old names
    assert "geometry.frame_embed" not in keys
    return cfg, old, path


def _names(policy: nn.Module) -> dict[int, str]:
    return {id(p): n for n, p in policy.named_parameters()}


def _moments(run: Run) -> dict[str, dict[str, torch.Tensor]]:
    names = _names(run.policy)
    return {names[id(p)]: s for p, s in run.optimizer.state.items()}


def test_resume_joins_weights_and_moments_like_the_rows(
    earlier: tuple[AtlasConfig, Run, Path], caplog: pytest.LogCaptureFixture
) -> None:
    cfg, old, path = earlier
    new = _run(cfg, seed=1)  # another init: every trainable value must come from the file
    with caplog.at_level(logging.INFO, logger="atlas.checkpoint.compat"):
        new.manager(cfg).load(path)
    assert "geometry.frame_embed joined from the earlier" in caplog.text
    assert new.progress.step == 2 and new.scheduler.last_epoch == 2
    g_old, g_new = old.policy.geometry, new.policy.geometry
    rows = torch.cat([g_old.history_embed, g_old.camera_embed]).detach()  # upgrade_state_dict's
    assert torch.equal(g_new.frame_embed.detach(), rows)
    new_state, old_state = new.policy.state_dict(), old.policy.state_dict()
    assert all(torch.equal(v, old_state[k]) for k, v in new_state.items() if "frame_embed" not in k)
    before, after = _moments(old), _moments(new)
    joined = after.pop("geometry.frame_embed")
    history, cameras = before.pop("geometry.history_embed"), before.pop("geometry.camera_embed")
    for key in MOMENTS:
        assert torch.equal(joined[key], torch.cat([history[key], cameras[key]]))
    assert torch.equal(joined["step"], history["step"])
    # Every other parameter got its own state back: the positions after the join shifted.
    assert sorted(after) == sorted(before)
    for name, state in after.items():
        assert all(torch.equal(state[k], before[name][k]) for k in (*MOMENTS, "step")), name
    # The next step: the same loss, and the rows move as the two old parameters do.
    assert torch.equal(new.step(seed=2), old.step(seed=2))
    moved = torch.cat([g_old.history_embed, g_old.camera_embed]).detach()
    assert not torch.equal(moved, rows)
    torch.testing.assert_close(g_new.frame_embed.detach(), moved, rtol=1e-6, atol=1e-7)
    old_state = old.policy.state_dict()
    for key, value in new.policy.state_dict().items():
        if "frame_embed" not in key:
            torch.testing.assert_close(value, old_state[key], rtol=1e-6, atol=1e-7, msg=key)


def test_moments_that_cannot_be_joined_restart(
    earlier: tuple[AtlasConfig, Run, Path], caplog: pytest.LogCaptureFixture
) -> None:
    cfg, old, path = earlier
    new = _run(cfg, seed=1)
    current = new.optimizer.state_dict()
    assert upgrade_optimizer_state(current, new.optimizer, new.policy) is current  # as it is
    saved = load_pt(path / "optimizer.pt")
    # optimizer.pt numbers the parameters by their position over all groups.
    positions = [id(p) for g in old.optimizer.param_groups for p in g["params"]]
    del saved["state"][positions.index(id(old.policy.geometry.camera_embed))]
    with caplog.at_level(logging.WARNING, logger="atlas.checkpoint.compat"):
        upgraded = upgrade_optimizer_state(saved, new.optimizer, new.policy)
    assert "Optimizer state of geometry.frame_embed restarts" in caplog.text
    assert "only some of them have a state" in caplog.text
    new.optimizer.load_state_dict(upgraded)
    frame_embed = new.policy.geometry.frame_embed
    assert frame_embed not in new.optimizer.state  # a fresh AdamW state for it alone
    assert len(new.optimizer.state) == len(saved["state"]) - 1
    new.step(seed=3)  # and training goes on
    assert frame_embed in new.optimizer.state
