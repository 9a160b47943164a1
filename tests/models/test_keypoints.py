"""The pixel keypoint branch (geometry.keypoints): it locates, and a policy learns with it."""

from __future__ import annotations

import torch

from atlas.models.keypoints import KeypointEncoder, SpatialSoftmax
from atlas.models.policy import build_policy
from atlas.models.testing import make_fake_batch, tiny_config, tiny_policy_config


def test_spatial_softmax_finds_the_peak_of_each_map() -> None:
    maps = torch.full((1, 2, 9, 17), -30.0)
    maps[0, 0, 0, 16] = 30.0  # top right
    maps[0, 1, 4, 4] = 30.0  # the middle row, a quarter of the way from the left
    xy = SpatialSoftmax(standardize=False)(maps).view(2, 2)
    torch.testing.assert_close(xy, torch.tensor([[1.0, -1.0], [-0.5, 0.0]]), atol=1e-4, rtol=0)


def test_standardized_maps_see_faint_peaks_that_raw_ones_average_away() -> None:
    """A fresh CNN's maps differ by ~0.01 across the image: raw, every keypoint sits near the
    centre; standardized, each lands near its map's peak."""
    maps = torch.zeros(1, 2, 14, 14)
    maps[0, 0, 1, 12] = 0.01  # top right
    maps[0, 1, 12, 2] = 0.01  # bottom left
    raw = SpatialSoftmax(standardize=False)(maps).view(2, 2)
    standardized = SpatialSoftmax()(maps).view(2, 2)
    assert raw.abs().max() < 1e-3
    peaks = torch.tensor([[12.0, 1.0], [2.0, 12.0]]) / 13 * 2 - 1  # (x, y) of the two peaks
    assert ((standardized - peaks).abs() < 0.15).all(), standardized


def _squares(n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """n frames [n, 1, 3, 56, 56] with a red 6 px square at a random place, and its centre."""
    frames = torch.full((n, 1, 3, 56, 56), 0.4)
    corner = torch.randint(0, 50, (n, 2), generator=g)
    for i, (r, c) in enumerate(corner.tolist()):
        frames[i, 0, :, r : r + 6, c : c + 6] = torch.tensor([0.9, 0.1, 0.1])[:, None, None]
    return frames, (corner.float() + 2.5) / 55 * 2 - 1  # (row, col) in [-1, 1]


def test_keypoints_learn_to_locate_an_object_quickly() -> None:
    """200 steps of regressing a square's position through the branch reach a few pixels: the
    position is in the token, which pooled patch tokens of a random VGGT do not give."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    enc, readout = KeypointEncoder(num_keypoints=8, dim=32), torch.nn.Linear(32, 2)
    opt = torch.optim.Adam([*enc.parameters(), *readout.parameters()], lr=3e-3)
    for _ in range(200):
        frames, target = _squares(32, g)
        loss = torch.nn.functional.mse_loss(readout(enc.token(enc(frames))).view(-1, 2), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    frames, target = _squares(256, g)
    with torch.no_grad():
        error_px = (readout(enc.token(enc(frames))).view(-1, 2) - target).abs().mean() * 55 / 2
    spread_px = (target - target.mean(0)).abs().mean() * 55 / 2  # predicting the mean position
    assert error_px < 1.0 and error_px < spread_px / 10, (error_px, spread_px)


def test_policy_with_keypoints_has_one_more_token_per_frame_and_trains_it() -> None:
    cfg = tiny_policy_config(geometry={"keypoints": 8}, data={"cameras": ["a", "b"]})
    policy = build_policy(cfg)
    assert policy.geometry.tokens_per_frame == 4 + 1
    loss, _ = policy(make_fake_batch(cfg, 3))
    loss.backward()
    grad = policy.geometry.keypoints.cnn[0].weight.grad
    assert grad is not None and grad.abs().sum() > 0
    assert "keypoints" not in policy.frozen_modules()  # trained with the geometry encoder


def test_the_action_head_reads_the_keypoints_of_every_frame() -> None:
    """use_keypoints: the head's output depends on the keypoints directly, not only through the
    fusion's token (the token is zeroed here, so only the direct path remains)."""
    cfg = tiny_policy_config(
        geometry={"keypoints": 4}, action_head={"use_keypoints": True}, data={"cameras": ["a", "b"]}
    )
    policy = build_policy(cfg).eval()
    assert policy.action_head.keypoints[0].in_features == 2 * 2 * 4  # frames x (x, y) x K
    for p in policy.geometry.keypoints.embed.parameters():
        torch.nn.init.zeros_(p)
    batch = make_fake_batch(cfg, 2)
    with torch.no_grad():
        before = policy.predict_chunk(batch)
        torch.nn.init.normal_(policy.geometry.keypoints.cnn[-1].weight)  # moves the keypoints
        after = policy.predict_chunk(batch)
    assert (before - after).abs().max() > 1e-4


def test_keypoints_refuse_the_feature_cache() -> None:
    cfg = tiny_config(geometry={"keypoints": 8}, data={"use_feature_cache": True})
    assert "model.geometry.keypoints" in dict(cfg.validate())
    assert "model.geometry.keypoints" in dict(tiny_config(geometry={"keypoints": -1}).validate())
    head_only = tiny_config(action_head={"use_keypoints": True})
    assert "model.action_head.use_keypoints" in dict(head_only.validate())


def test_exports_from_before_standardized_maps_keep_their_softmax() -> None:
    """A config.json without geometry.keypoints_standardize was trained on raw maps."""
    from atlas.models.config import read_policy_config

    old = read_policy_config({"geometry": {"keypoints": 8}}, "config.json")
    assert old.geometry.keypoints_standardize is False
    new = read_policy_config({"geometry": {"keypoints": 8, "keypoints_standardize": True}}, "x")
    assert new.geometry.keypoints_standardize is True
