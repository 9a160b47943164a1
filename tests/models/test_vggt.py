"""VGGT reimplementation: parity with the official fixture, checkpoint layout, loading, cameras."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from atlas.models.vggt import (
    VGGT,
    VGGTConfig,
    WeightsError,
    build_vggt,
    extri_intri_to_pose_encoding,
    get_vggt_preset,
    load_vggt_state_dict,
    load_vggt_weights,
    mat_to_quat,
    pose_encoding_to_extri_intri,
    quat_to_mat,
    unproject_depth_to_world_points,
    verify,
)
from atlas.models.vggt.fixture import config_from_fixture, fixture_config_from

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
TINY = FIXTURES / "tiny_reference.pt"
SHAPES_1B = FIXTURES / "vggt1b_state_dict_shapes.json"


@pytest.fixture(scope="module")
def blob() -> dict:
    return torch.load(TINY, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def tiny_model(blob) -> VGGT:
    model = VGGT(config_from_fixture(blob["config"]))
    model.load_state_dict(blob["state_dict"], strict=True)
    return model.eval()


def run_verify(path: Path, capsys) -> tuple[int, dict | None]:
    rc = verify.main([str(path)])
    out = capsys.readouterr().out.strip()
    return rc, (json.loads(out) if out else None)


# --- parity with the official code ---------------------------------------------------------


def test_verify_passes_on_tiny_reference(capsys) -> None:
    rc, summary = run_verify(TINY, capsys)
    assert rc == 0, summary
    diffs = summary["max_abs_diff"]
    assert summary["passed"] and all(d is not None and d <= 1e-4 for d in diffs.values())
    for key in ("outputs.depth", "outputs_square.pose_enc_list", "camera_utils.intrinsic"):
        assert key in diffs
    assert "outputs.aggregated_tokens" in diffs and "outputs.dino_x_norm_patchtokens" in diffs


def test_tiny_fixture_config_mapping(blob) -> None:
    c = config_from_fixture(blob["config"])
    assert (c.embed_dim, c.depth, c.num_heads, c.dino_depth, c.dino_num_heads) == (32, 4, 2, 2, 2)
    assert (c.camera_trunk_depth, c.camera_num_heads, c.dpt_features) == (2, 4, 16)
    assert c.dpt_out_channels == (8, 16, 32, 32) and c.dpt_layers == (0, 1, 2, 3)
    assert config_from_fixture(fixture_config_from(c)) == c


# --- official VGGT-1B layout ---------------------------------------------------------------


def test_vggt_1b_state_dict_matches_official_layout() -> None:
    model = build_vggt("vggt_1b", device="meta")
    official = json.loads(SHAPES_1B.read_text())
    official = {k: v for k, v in official.items() if not k.startswith("track_head.")}
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert list(ours) == list(official)  # same keys in the same order
    assert ours == official
    assert sum(p.numel() for p in model.parameters()) == 1_190_596_120
    assert get_vggt_preset("vggt_1b") == VGGTConfig()


# --- loading --------------------------------------------------------------------------------


def test_meta_load_drops_track_head_with_one_log_line(blob, tiny_model, tmp_path, caplog) -> None:
    state = dict(blob["state_dict"])
    state["track_head.tracker.fake.weight"] = torch.zeros(3)
    state["track_head.feature_extractor.norm.bias"] = torch.zeros(3)
    path = tmp_path / "model.pt"
    torch.save(state, path)
    model = VGGT(tiny_model.config).to("meta")
    with caplog.at_level(logging.INFO, logger="atlas.models.vggt.loading"):
        dropped = load_vggt_weights(model, path)
    assert sorted(dropped) == sorted(k for k in state if k.startswith("track_head."))
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "track_head" in lines[0] and "2 keys" in lines[0]
    assert not any(t.is_meta for t in [*model.parameters(), *model.buffers()])
    assert not model.aggregator.patch_embed.mask_token.requires_grad
    with torch.no_grad():
        out = model.eval()(blob["images"])
    torch.testing.assert_close(out["depth"], blob["outputs"]["depth"], rtol=0, atol=1e-5)


def test_meta_load_assigns_without_copy_and_drops_disabled_heads(blob, tiny_model, caplog) -> None:
    config = replace(config_from_fixture(blob["config"]), enable_depth=False, enable_point=False)
    model = build_vggt(config, device="meta")
    state = dict(blob["state_dict"])
    with caplog.at_level(logging.INFO, logger="atlas.models.vggt.loading"):
        dropped = load_vggt_state_dict(model, state, "fixture")
    assert dropped and all(k.startswith(("depth_head.", "point_head.")) for k in dropped)
    assert len(caplog.records) == 1
    # assign=True: the parameter *is* the checkpoint tensor (one copy of the weights in memory).
    key = "aggregator.frame_blocks.0.attn.qkv.weight"
    assert model.state_dict()[key].data_ptr() == state[key].data_ptr()
    with torch.no_grad():
        tokens, _ = model.aggregator(blob["images"], layers=[-1])
        reference, _ = tiny_model.aggregator(blob["images"], layers=[-1])
    # Bitwise against a model loaded the ordinary way in this process (same machine, same kernels);
    # the fixture was made on another CPU, whose summation order differs in the last bits.
    assert torch.equal(tokens[0], reference[0])
    expected = blob["outputs"]["aggregated_tokens"][-1]
    torch.testing.assert_close(tokens[0], expected, rtol=1e-5, atol=1e-5)


def test_safetensors_and_pt_load_the_same(blob, tiny_model, tmp_path) -> None:
    state = {k: v.contiguous() for k, v in blob["state_dict"].items()}
    save_file(state, tmp_path / "model.safetensors")
    torch.save(state, tmp_path / "model.pt")
    for name in ("model.safetensors", "model.pt"):
        model = VGGT(tiny_model.config)
        load_vggt_weights(model, tmp_path / name)
        for key, value in model.state_dict().items():
            assert torch.equal(value, state[key]), (name, key)


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda s: s.update({"aggregator.bogus": torch.zeros(1)}), "unexpected keys (1)"),
        (lambda s: s.pop("camera_head.embed_pose.bias"), "missing keys (1)"),
        (lambda s: s.update({"depth_head.norm.bias": torch.zeros(5)}), "shape mismatches (1)"),
        (lambda s: [s.pop(k) for k in list(s)[:12]], "(2 more)"),
    ],
)
def test_mismatched_checkpoint_raises_clear_error(blob, tmp_path, edit, expected) -> None:
    state = dict(blob["state_dict"])
    edit(state)
    path = tmp_path / "bad.pt"
    torch.save(state, path)
    model = VGGT(config_from_fixture(blob["config"]))
    with pytest.raises(WeightsError) as err:
        load_vggt_weights(model, path)
    assert expected in str(err.value) and str(path) in str(err.value)


def test_checkpoint_with_pickled_objects_is_refused(tmp_path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"x": torch.zeros(1), "obj": Path("/etc/passwd")}, path)  # not a tensor type
    with pytest.raises(WeightsError, match="cannot read"):
        load_vggt_weights(build_vggt("tiny", device="meta"), path)


# --- camera utilities -----------------------------------------------------------------------


def test_camera_utils_match_fixture(blob) -> None:
    cam = blob["camera_utils"]
    hw = tuple(int(v) for v in cam["image_size_hw"])
    extrinsic, intrinsic = pose_encoding_to_extri_intri(cam["pose_enc"], hw)
    torch.testing.assert_close(extrinsic, cam["extrinsic"], rtol=0, atol=1e-6)
    torch.testing.assert_close(intrinsic, cam["intrinsic"], rtol=0, atol=1e-4)
    roundtrip = extri_intri_to_pose_encoding(extrinsic, intrinsic, hw)
    torch.testing.assert_close(roundtrip, cam["pose_enc_roundtrip"], rtol=0, atol=1e-6)
    assert (roundtrip[..., 6] >= 0).all()
    points = unproject_depth_to_world_points(
        blob["outputs"]["depth"][0], extrinsic[0], intrinsic[0]
    )
    torch.testing.assert_close(points.double(), cam["world_points_from_depth"], rtol=0, atol=1e-5)


def test_quaternion_roundtrip_standardises_sign() -> None:
    q = torch.nn.functional.normalize(torch.randn(64, 4, dtype=torch.float64), dim=-1)
    back = mat_to_quat(quat_to_mat(q))
    expected = torch.where(q[..., 3:] < 0, -q, q)
    torch.testing.assert_close(back, expected, rtol=0, atol=1e-10)
