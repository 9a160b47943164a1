"""Reference-fixture format: official constructor arguments <-> VGGTConfig, and model outputs.

A fixture (e.g. tests/fixtures/tiny_reference.pt) is a dict with `config` (the constructor
arguments of the official Aggregator, DinoVisionTransformer, CameraHead and DPTHeads, plus the
forward settings), `state_dict`, pairs `images*` / `outputs*`, and `camera_utils`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from atlas.config.vggt import VGGTConfig
from atlas.models.vggt.camera import (
    extri_intri_to_pose_encoding,
    pose_encoding_to_extri_intri,
    unproject_depth_to_world_points,
)
from atlas.models.vggt.model import VGGT

DINO_KEY = "aggregator.patch_embed"
# Official `patch_embed` names -> (width, depth, heads) of the DINOv2 variant (mlp_ratio 4).
DINO_VARIANTS = {
    "dinov2_vitl14_reg": (1024, 24, 16),
    "dinov2_vitb14_reg": (768, 12, 12),
    "dinov2_vits14_reg": (384, 12, 6),
}
_DPT_SHARED = ("features", "out_channels", "intermediate_layer_idx", "pos_embed", "down_ratio")


class FixtureConfigError(ValueError):
    """A fixture config this reimplementation cannot reproduce."""


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise FixtureConfigError(message)


def _dino_fields(agg: dict[str, Any], dino: dict[str, Any] | None) -> dict[str, Any]:
    """DINO fields of VGGTConfig from an explicit DINO config or an official variant name."""
    if dino is None:
        name = agg.get("patch_embed", "dinov2_vitl14_reg")
        _require(name in DINO_VARIANTS, f"unsupported patch_embed {name!r}")
        width, depth, heads = DINO_VARIANTS[name]
        _require(width == agg["embed_dim"], f"{name} is {width} wide, aggregator embed_dim differs")
        return {"dino_depth": depth, "dino_num_heads": heads}
    same = ("embed_dim", "img_size", "patch_size", "num_register_tokens")
    for key in same + ("qkv_bias", "proj_bias", "ffn_bias"):
        _require(dino.get(key, agg.get(key)) == agg.get(key), f"DINO {key} differs from aggregator")
    _require(dino.get("ffn_layer", "mlp") == "mlp", "only the 'mlp' DINO FFN is supported")
    _require(not dino.get("qk_norm", False), "DINO qk_norm is not supported")
    _require(dino.get("block_chunks", 0) == 0, "DINO block_chunks > 0 is not supported")
    _require(dino.get("interpolate_offset", 0.0) == 0.0, "DINO interpolate_offset must be 0")
    _require(dino.get("interpolate_antialias", True), "DINO interpolate_antialias must be True")
    _require(dino.get("in_chans", 3) == 3, "DINO in_chans must be 3")
    return {
        "dino_depth": dino["depth"],
        "dino_num_heads": dino["num_heads"],
        "dino_mlp_ratio": float(dino.get("mlp_ratio", 4.0)),
        "dino_init_values": float(dino.get("init_values", 1.0)),
    }


def _dpt_fields(cfg: dict[str, Any], embed_dim: int) -> dict[str, Any]:
    """DPT fields from the depth/point head configs (which must agree on sizes)."""
    heads = {n: cfg.get(n) for n in ("depth_head", "point_head")}
    out: dict[str, Any] = {f"enable_{n[:-5]}": h is not None for n, h in heads.items()}
    present = [h for h in heads.values() if h is not None]
    for name, head in heads.items():
        if head is None:
            continue
        role = name[:-5]
        _require(head["dim_in"] == 2 * embed_dim, f"{name}.dim_in must be 2*embed_dim")
        _require(not head.get("feature_only", False), f"{name}.feature_only is not supported")
        _require(head["output_dim"] == (2 if role == "depth" else 4), f"{name}.output_dim")
        out[f"{role}_activation"] = head["activation"]
        out[f"{role}_conf_activation"] = head["conf_activation"]
    if present:
        first = present[0]
        for key in _DPT_SHARED + ("patch_size",):
            _require(all(h.get(key) == first.get(key) for h in present), f"DPT heads differ: {key}")
        out.update(
            dpt_features=first["features"],
            dpt_out_channels=tuple(first["out_channels"]),
            dpt_layers=tuple(first["intermediate_layer_idx"]),
            dpt_pos_embed=first.get("pos_embed", True),
            dpt_down_ratio=first.get("down_ratio", 1),
        )
    return out


def _camera_fields(cam: dict[str, Any] | None, embed_dim: int) -> dict[str, Any]:
    if cam is None:
        return {"enable_camera": False}
    _require(cam["dim_in"] == 2 * embed_dim, "camera_head.dim_in must be 2*embed_dim")
    _require(cam.get("pose_encoding_type", "absT_quaR_FoV") == "absT_quaR_FoV", "pose encoding")
    return {
        "enable_camera": True,
        "camera_trunk_depth": cam.get("trunk_depth", 4),
        "camera_num_heads": cam.get("num_heads", 16),
        "camera_mlp_ratio": float(cam.get("mlp_ratio", 4.0)),
        "camera_init_values": float(cam.get("init_values", 0.01)),
        "camera_trans_act": cam.get("trans_act", "linear"),
        "camera_quat_act": cam.get("quat_act", "linear"),
        "camera_fl_act": cam.get("fl_act", "relu"),
    }


def config_from_fixture(cfg: dict[str, Any]) -> VGGTConfig:
    """Map a fixture `config` dict (official constructor arguments) to a VGGTConfig."""
    agg = cfg["aggregator"]
    _require(list(agg.get("aa_order", ["frame", "global"])) == ["frame", "global"], "aa_order")
    fwd = cfg.get("forward", {})
    _require(not fwd.get("autocast", False), "fixtures must be produced without autocast")
    C = agg.get("embed_dim", 1024)
    fields: dict[str, Any] = {
        "img_size": agg.get("img_size", 518),
        "patch_size": agg.get("patch_size", 14),
        "embed_dim": C,
        "depth": agg.get("depth", 24),
        "num_heads": agg.get("num_heads", 16),
        "mlp_ratio": float(agg.get("mlp_ratio", 4.0)),
        "num_register_tokens": agg.get("num_register_tokens", 4),
        "qkv_bias": agg.get("qkv_bias", True),
        "proj_bias": agg.get("proj_bias", True),
        "ffn_bias": agg.get("ffn_bias", True),
        "qk_norm": agg.get("qk_norm", True),
        "rope_freq": float(agg.get("rope_freq", 100)),
        "init_values": float(agg.get("init_values", 0.01)),
        "aa_block_size": agg.get("aa_block_size", 1),
        "camera_num_iterations": fwd.get("camera_num_iterations", 4),
        "dpt_frames_chunk_size": fwd.get("dpt_frames_chunk_size", 8),
    }
    fields |= _dino_fields(agg, cfg.get(DINO_KEY))
    fields |= _camera_fields(cfg.get("camera_head"), C)
    fields |= _dpt_fields(cfg, C)
    try:
        return VGGTConfig(**fields)
    except ValueError as exc:
        raise FixtureConfigError(str(exc)) from exc


def fixture_config_from(c: VGGTConfig) -> dict[str, Any]:
    """Inverse of config_from_fixture: the official constructor arguments for a VGGTConfig."""
    agg = {
        k: getattr(c, k)
        for k in ("img_size", "patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio")
        + ("num_register_tokens", "qkv_bias", "proj_bias", "ffn_bias", "qk_norm", "rope_freq")
        + ("init_values", "aa_block_size")
    }
    agg["aa_order"] = ["frame", "global"]
    dino = {
        "embed_dim": c.embed_dim,
        "img_size": c.img_size,
        "patch_size": c.patch_size,
        "depth": c.dino_depth,
        "num_heads": c.dino_num_heads,
        "mlp_ratio": c.dino_mlp_ratio,
        "num_register_tokens": c.num_register_tokens,
        "init_values": c.dino_init_values,
    }
    camera = {
        "dim_in": 2 * c.embed_dim,
        "trunk_depth": c.camera_trunk_depth,
        "num_heads": c.camera_num_heads,
        "mlp_ratio": c.camera_mlp_ratio,
        "init_values": c.camera_init_values,
        "trans_act": c.camera_trans_act,
        "quat_act": c.camera_quat_act,
        "fl_act": c.camera_fl_act,
    }

    return {
        "aggregator": agg,
        DINO_KEY: dino,
        "camera_head": camera if c.enable_camera else None,
        "point_head": _dpt_args(c, "point") if c.enable_point else None,
        "depth_head": _dpt_args(c, "depth") if c.enable_depth else None,
        "track_head": None,
        "forward": {
            "autocast": False,
            "camera_num_iterations": c.camera_num_iterations,
            "dpt_frames_chunk_size": c.dpt_frames_chunk_size,
        },
    }


def _dpt_args(c: VGGTConfig, role: str) -> dict[str, Any]:
    """Official DPTHead arguments of the depth or point head."""
    return {
        "dim_in": 2 * c.embed_dim,
        "patch_size": c.patch_size,
        "output_dim": 2 if role == "depth" else 4,
        "activation": getattr(c, f"{role}_activation"),
        "conf_activation": getattr(c, f"{role}_conf_activation"),
        "features": c.dpt_features,
        "out_channels": list(c.dpt_out_channels),
        "intermediate_layer_idx": list(c.dpt_layers),
        "pos_embed": c.dpt_pos_embed,
        "down_ratio": c.dpt_down_ratio,
        "feature_only": False,
    }


@torch.no_grad()
def model_outputs(model: VGGT, images: Tensor) -> dict[str, Tensor]:
    """Every quantity a fixture's `outputs` may hold, for images [B, S, 3, H, W] (fp32, eval)."""
    agg = model.aggregator
    B, S, _, H, W = images.shape
    normalised = (images - agg._resnet_mean) / agg._resnet_std
    tokens, patch_start_idx = agg(images)
    out: dict[str, Tensor] = {
        "dino_x_norm_patchtokens": agg.patch_embed(normalised.reshape(B * S, 3, H, W)),
        "aggregated_tokens": torch.stack(tokens),
        "patch_start_idx": torch.tensor(patch_start_idx),
    }
    preds = model(images)
    for key, value in preds.items():
        if key != "images":
            out[key] = torch.stack(value) if isinstance(value, list) else value
    if "pose_enc" in preds:
        extrinsic, intrinsic = pose_encoding_to_extri_intri(preds["pose_enc"], (H, W))
        out["extrinsic"], out["intrinsic"] = extrinsic, intrinsic
    return out


def camera_utils_outputs(camera_utils: dict[str, Tensor], depth: Tensor) -> dict[str, Tensor]:
    """Recompute a fixture's `camera_utils` from its pose_enc, image size and depth [S,H,W,1]."""
    hw = tuple(int(v) for v in camera_utils["image_size_hw"])
    extrinsic, intrinsic = pose_encoding_to_extri_intri(camera_utils["pose_enc"], hw)
    return {
        "extrinsic": extrinsic,
        "intrinsic": intrinsic,
        "pose_enc_roundtrip": extri_intri_to_pose_encoding(extrinsic, intrinsic, hw),
        "world_points_from_depth": unproject_depth_to_world_points(
            depth, extrinsic[0], intrinsic[0]
        ),
    }


def build_fixture(model: VGGT, inputs: dict[str, Tensor]) -> dict[str, Any]:
    """A fixture of `model` (its config, weights and outputs) for inputs {"images*": tensor}."""
    model = model.eval()
    blob: dict[str, Any] = {
        "config": fixture_config_from(model.config),
        "state_dict": {k: v.clone() for k, v in model.state_dict().items()},
    }
    for name, images in inputs.items():
        blob[name] = images
        blob["outputs" + name[len("images") :]] = model_outputs(model, images)
    first = blob["outputs" + next(iter(inputs))[len("images") :]]
    if "depth" in first:
        B, S, H, W = first["depth"].shape[:4]
        cam = {"pose_enc": random_pose_encoding(B, S), "image_size_hw": torch.tensor([H, W])}
        cam |= camera_utils_outputs(cam, first["depth"][0])
        blob["camera_utils"] = cam
    return blob


def random_pose_encoding(B: int, S: int, seed: int = 0) -> Tensor:
    """Well-conditioned pose encodings [B, S, 9]: unit quaternions, FoV in [0.6, 1.2] rad."""
    g = torch.Generator().manual_seed(seed)
    trans = torch.randn(B, S, 3, generator=g)
    quat = torch.nn.functional.normalize(torch.randn(B, S, 4, generator=g), dim=-1)
    fov = 0.6 + 0.6 * torch.rand(B, S, 2, generator=g)
    return torch.cat((trans, quat, fov), dim=-1)
