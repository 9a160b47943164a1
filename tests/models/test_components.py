"""Geometry encoder, fusion, action head and loss in isolation (tiny sizes, CPU)."""

from __future__ import annotations

import pytest
import torch

from atlas.config.schema import ActionHeadConfig, FusionConfig, GeometryConfig, LossConfig
from atlas.models.action_head import ActionHead
from atlas.models.fusion import FusionTransformer
from atlas.models.geometry import GeometryEncoder, backbone_inputs, extract_vggt_features
from atlas.models.language import LanguageFeatures
from atlas.models.loss import VLALoss
from atlas.models.testing import TEST_VGGT_PRESET
from atlas.models.vggt import build_vggt


@pytest.fixture(scope="module")
def vggt() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_vggt(TEST_VGGT_PRESET).eval()


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"keep_special_tokens": True, "use_camera_pose": True},
        {"use_point_features": True, "point_source": "depth"},
        {"use_point_features": True, "point_source": "point_head", "tokens_per_frame": 1},
    ],
)
def test_geometry_tokens(vggt: torch.nn.Module, options: dict) -> None:
    cfg = GeometryConfig(**{"tokens_per_frame": 4, **options})
    images = torch.rand(2, 3, 3, 56, 42)  # 3 frames of 4 x 3 patches
    with torch.no_grad():
        feats = extract_vggt_features(vggt, images, [-1, 1], cfg)
    assert (feats.points is not None) == cfg.use_point_features
    needs_camera = cfg.use_camera_pose or (cfg.use_point_features and cfg.point_source == "depth")
    assert (feats.pose_enc is not None) == needs_camera
    enc = GeometryEncoder(cfg, vggt_dim=128, num_layers=2, dim=16, num_cameras=3, history=1)
    tokens = enc(backbone_inputs(feats, cfg))
    per_frame = 5 * cfg.keep_special_tokens + cfg.tokens_per_frame + cfg.use_camera_pose
    assert tokens.shape == (2, 3 * per_frame, 16) and tokens.isfinite().all()


@pytest.mark.parametrize(("history", "cameras"), [(1, 1), (2, 3)])
def test_geometry_gradients_accumulate_exactly(history: int, cameras: int) -> None:
    """Each parameter owns its .grad, so a second backward adds exactly once.

    The frame embedding is a broadcast sum of a history row and a camera row. Held as two
    parameters, both adopted views of ONE gradient tensor as .grad (history = cameras = 1), and
    the second micro-batch's backward then added into it twice.
    """
    torch.manual_seed(0)
    cfg = GeometryConfig(tokens_per_frame=4)
    enc = GeometryEncoder(
        cfg, vggt_dim=8, num_layers=1, dim=8, num_cameras=cameras, history=history
    )
    inputs = {"tokens": torch.randn(2, history * cameras, 4, 8)}
    enc(inputs).square().sum().backward()
    once = {n: p.grad.clone() for n, p in enc.named_parameters()}
    storages = {p.grad.untyped_storage().data_ptr() for p in enc.parameters()}
    assert len(storages) == len(once)  # no two parameters share gradient storage
    enc(inputs).square().sum().backward()
    for name, p in enc.named_parameters():
        torch.testing.assert_close(p.grad, 2 * once[name], msg=name)


def test_geometry_loads_the_parameter_names_of_earlier_versions() -> None:
    """history_embed + camera_embed (earlier checkpoints) become the rows of frame_embed."""
    torch.manual_seed(0)
    cfg = GeometryConfig(tokens_per_frame=4)
    enc = GeometryEncoder(cfg, vggt_dim=8, num_layers=1, dim=8, num_cameras=3, history=2)
    old = enc.state_dict()
    steps, cams = old.pop("frame_embed").split([2, 3])
    old.update(history_embed=steps + 1.0, camera_embed=cams - 1.0)
    fresh = GeometryEncoder(cfg, vggt_dim=8, num_layers=1, dim=8, num_cameras=3, history=2)
    fresh.load_state_dict(old)  # strict: the old names are mapped, nothing is left over
    inputs = {"tokens": torch.randn(2, 6, 4, 8)}
    with torch.no_grad():
        # +1 on every step row and -1 on every camera row cancel in each frame's sum.
        torch.testing.assert_close(fresh(inputs), enc(inputs))
        assert not torch.equal(fresh.frame_embed, enc.frame_embed)


def test_fusion_ignores_language_padding() -> None:
    torch.manual_seed(0)
    fusion = FusionTransformer(FusionConfig(dim=16, depth=2, num_heads=4, dropout=0.0), 24, 3)
    geometry, pooled = torch.randn(2, 5, 16), torch.randn(2, 24)
    tokens, mask = torch.randn(2, 6, 24), torch.ones(2, 6, dtype=torch.bool)
    mask[0, 4:] = False
    out = fusion(geometry, LanguageFeatures(pooled, tokens, mask))
    garbage = tokens.clone()
    garbage[0, 4:] = 100.0  # values at padded positions must not matter
    assert out.shape == (2, 3, 16)
    torch.testing.assert_close(fusion(geometry, LanguageFeatures(pooled, garbage, mask)), out)


@pytest.mark.parametrize("use_proprio", [False, True])
def test_action_head_shapes(use_proprio: bool) -> None:
    head = ActionHead(ActionHeadConfig(chunk_size=8, use_proprio=use_proprio, hidden_dim=16), 12)
    out = head(torch.randn(3, 8, 12), torch.randn(3, 8) if use_proprio else None)
    assert out.shape == (3, 8, 7)


def test_loss_masks_steps_and_weights_terms() -> None:
    pred, target = torch.zeros(2, 3, 7), torch.zeros(2, 3, 7)
    target[..., :6] = 0.5  # SmoothL1(0.5) = 0.125
    target[..., 6] = 1.0
    pred[1, 2] = 100.0  # a masked-out step must not count
    mask = torch.ones(2, 3, dtype=torch.bool)
    mask[1, 2] = False
    loss, m = VLALoss(LossConfig(pose_weight=2.0, gripper_weight=0.5))(pred, target, mask)
    assert m["loss_pose"].item() == pytest.approx(0.125)
    assert m["loss_gripper"].item() == pytest.approx(1.0)
    assert loss.item() == pytest.approx(2 * 0.125 + 0.5 * 1.0)
    _, m = VLALoss(LossConfig(gripper_loss="bce"))(pred, target, mask)
    assert m["loss_gripper"].item() == pytest.approx(torch.log(torch.tensor(2.0)).item())
    _, m = VLALoss(LossConfig(pose_loss="l1"))(pred, target, mask)
    assert m["loss_pose"].item() == pytest.approx(0.5)  # |0.5|, not 0.5 * 0.5^2
