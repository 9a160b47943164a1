"""VGGT at other configurations: self-made fixtures through verify, layer selection, precision,
activation checkpointing and presets."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from atlas.models.vggt import VGGT, VGGTConfig, build_vggt, get_vggt_preset, verify
from atlas.models.vggt.fixture import build_fixture, config_from_fixture, fixture_config_from

# Differs from the official fixture in every size the verify mapping has to carry over.
ODD = VGGTConfig(
    img_size=42,
    embed_dim=48,
    depth=3,
    num_heads=3,
    dino_depth=1,
    dino_num_heads=2,
    dino_mlp_ratio=2.0,
    camera_trunk_depth=1,
    camera_num_heads=2,
    camera_num_iterations=2,
    dpt_features=8,
    dpt_out_channels=(4, 8, 12, 16),
    dpt_layers=(2, 0, -1, 1),
    dpt_frames_chunk_size=2,
)


def randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Redraw every parameter (as the official fixture did) so that no path is trivial."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("gamma"):
                p.copy_(0.5 + 0.5 * torch.rand(p.shape, generator=g))
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif p.dim() >= 2 and "token" not in name and "pos_embed" not in name:
                p.copy_(torch.randn(p.shape, generator=g) / p[0].numel() ** 0.5)
            else:
                p.copy_(torch.randn(p.shape, generator=g))
    return model


def odd_fixture() -> dict:
    model = randomize_(VGGT(ODD)).eval()
    g = torch.Generator().manual_seed(1)
    inputs = {
        "images": torch.rand(2, 3, 3, 28, 70, generator=g),  # B=2, S=3 (chunks of 2), non-square
        "images_single": torch.rand(1, 1, 3, 42, 42, generator=g),  # pos_embed uninterpolated
    }
    return build_fixture(model, inputs)


def run_verify(path: Path, capsys) -> tuple[int, dict | None]:
    rc = verify.main([str(path)])
    out = capsys.readouterr().out.strip()
    return rc, (json.loads(out) if out else None)


def test_other_config_fixture_verifies_and_catches_a_perturbation(tmp_path, capsys) -> None:
    blob = odd_fixture()
    assert config_from_fixture(blob["config"]) == ODD
    path = tmp_path / "odd.pt"
    torch.save(blob, path)
    rc, summary = run_verify(path, capsys)
    assert rc == 0, summary
    assert {"outputs_single.depth", "camera_utils.world_points_from_depth"} <= set(
        summary["max_abs_diff"]
    )
    blob["state_dict"]["aggregator.frame_blocks.1.attn.qkv.weight"] += 0.05
    torch.save(blob, path)
    rc, summary = run_verify(path, capsys)
    assert rc == 1 and not summary["passed"]
    assert "outputs.aggregated_tokens" in summary["failed"]
    assert "outputs.dino_x_norm_patchtokens" not in summary["failed"]


def test_verify_exit_2_on_unreadable_or_unsupported(tmp_path, capsys) -> None:
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torch file")
    assert run_verify(garbage, capsys)[0] == 2
    assert run_verify(tmp_path / "missing.pt", capsys)[0] == 2
    blob = {"config": fixture_config_from(ODD), "state_dict": {}, "images": torch.zeros(1)}
    blob["outputs"] = {}
    blob["config"]["aggregator"]["aa_order"] = ["global", "frame"]
    torch.save(blob, tmp_path / "unsupported.pt")
    assert run_verify(tmp_path / "unsupported.pt", capsys)[0] == 2


def test_aggregator_layer_selection_and_early_exit() -> None:
    model = randomize_(VGGT(ODD)).eval()
    images = torch.rand(1, 2, 3, 28, 28)
    with torch.no_grad():
        full, start = model.aggregator(images)
        calls = []
        hook = model.aggregator.global_blocks[2].register_forward_hook(lambda *a: calls.append(1))
        picked, start2 = model.aggregator(images, layers=[1, 0])
        hook.remove()
        last = model(images, return_layers=[-1])
    assert start == start2 == 5 and len(full) == 3
    assert full[0].shape == (1, 2, 5 + 4, 96)
    assert torch.equal(picked[0], full[1]) and torch.equal(picked[1], full[0])
    assert not calls  # layer 2 was never computed
    assert torch.equal(last["tokens"][0], full[2]) and last["patch_start_idx"] == 5
    with pytest.raises(ValueError, match="depth 3"):
        model.aggregator(images, layers=[3])


def test_frame_chunking_and_aa_block_size() -> None:
    a = randomize_(VGGT(ODD)).eval()  # DPT in chunks of 2 frames
    b = VGGT(replace(ODD, dpt_frames_chunk_size=None)).eval()  # all frames at once
    c = VGGT(replace(ODD, aa_block_size=3)).eval()  # 3 frame blocks, then 3 global blocks
    b.load_state_dict(a.state_dict())
    c.load_state_dict(a.state_dict())
    images = torch.rand(1, 3, 3, 28, 42)
    with torch.no_grad():
        out_a, out_b = a(images), b(images)
        tokens_a, tokens_c = a.aggregator(images)[0], c.aggregator(images)[0]
    for key in ("depth", "depth_conf", "world_points", "world_points_conf"):
        torch.testing.assert_close(out_a[key], out_b[key], rtol=1e-5, atol=1e-5)
    # With aa_block_size=3, output i is still [frame block i | global block i]: the frame half of
    # layer 0 is the same computation, the global half is not.
    assert torch.equal(tokens_a[0][..., :48], tokens_c[0][..., :48])
    assert not torch.allclose(tokens_a[0][..., 48:], tokens_c[0][..., 48:])
    assert len(tokens_c) == 3


def test_heads_stay_fp32_under_bf16_autocast() -> None:
    model = randomize_(VGGT(ODD)).eval()
    images = torch.rand(1, 2, 3, 28, 28)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(images, return_layers=[0])
    assert out["tokens"][0].dtype == torch.float32  # residual stream promoted by fp32 gammas
    for key in ("pose_enc", "depth", "depth_conf", "world_points", "world_points_conf"):
        assert out[key].dtype == torch.float32 and torch.isfinite(out[key]).all(), key


def test_activation_checkpointing_gives_the_same_gradients() -> None:
    plain = randomize_(VGGT(ODD)).train()
    ckpt = VGGT(replace(ODD, activation_checkpointing=True)).train()
    ckpt.load_state_dict(plain.state_dict())
    images = torch.rand(1, 2, 3, 28, 28)
    grads = []
    for model in (plain, ckpt):
        tokens, _ = model.aggregator(images, layers=[-1])
        tokens[0].square().mean().backward()
        grads.append(model.aggregator.frame_blocks[0].mlp.fc1.weight.grad)
    torch.testing.assert_close(grads[0], grads[1])


def test_tiny_preset_runs_at_224() -> None:
    torch.manual_seed(0)
    model = build_vggt("tiny").eval()
    with torch.no_grad():
        out = model(torch.rand(1, 2, 3, 224, 224))
    assert out["pose_enc"].shape == (1, 2, 9)
    assert out["depth"].shape == (1, 2, 224, 224, 1)
    assert out["world_points"].shape == (1, 2, 224, 224, 3)
    assert out["world_points_conf"].shape == (1, 2, 224, 224)
    assert model.aggregator.patch_start_idx == 5
    with pytest.raises(KeyError, match="Did you mean 'tiny'"):
        get_vggt_preset("tiyn")
    with pytest.raises(ValueError, match="did you mean 'embed_dim'"):
        VGGTConfig.from_dict({"embed_dims": 3})
