"""Geometry features: VGGT outputs -> a short sequence of tokens for the fusion transformer.

Per frame, the aggregator emits P = 5 + (H/14)(W/14) tokens of width 2C (1 camera + 4 register
tokens, then the patch grid). Per frame the geometry encoder keeps

    [special (5, if keep_special_tokens) | pooled patch grid (k*k) | camera pose (1, optional)]

Two stages, split where the parameters start so a frozen backbone's output can be cached:

1. `backbone_inputs` (no parameters): each configured layer (`model.vggt.layers`) is
   layer-normed without affine, the patch grid is average-pooled to k x k (k*k =
   tokens_per_frame), layers are concatenated on channels -> "tokens" [B, S, T0, L*2C]; plus
   "pose_enc" [B, S, 9] and "points" [B, S, H/2, W/2, 3] when enabled. Pooling commutes with the
   per-channel affine of a LayerNorm, so normalising before pooling and applying the affine after
   it equals a full LayerNorm on every token.
2. `GeometryEncoder` (trainable): the LayerNorm affine, a projection to the fusion width, then a
   slot embedding (which token of the frame) and a frame embedding (camera + history step), so the
   fusion knows where each token comes from; the frame embedding is a history-step row plus a
   camera row, both held in one parameter (`frame_embed`, see `GeometryEncoder`). Optional,
   each switchable in `GeometryConfig`:
   a PointNet over world points (from depth unprojected with the predicted camera, or from the
   point head), max-pooled into the same k x k cells and added to the patch tokens; and a
   camera-pose token per frame embedding VGGT's 9-value pose encoding; and a keypoint token per
   frame (`keypoints`: a small CNN on the pixels, spatial softmax, atlas.models.keypoints), which
   reads the frames themselves under "pixels" [B, S, 3, H, W] in [0, 1].

`extract_vggt_features` runs only the parts of VGGT these options need.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from atlas.config.schema import GeometryConfig
from atlas.models.keypoints import KeypointEncoder
from atlas.models.vggt.camera import pose_encoding_to_extri_intri, unproject_depth_to_world_points
from atlas.models.vggt.model import VGGT

POSE_DIM = 9  # VGGT pose encoding: [tx, ty, tz, qx, qy, qz, qw, fov_h, fov_w]
POINT_STRIDE = 2  # the PointNet reads every 2nd pixel: a quarter of the points, same cells


@dataclass
class VGGTFeatures:
    """What the geometry encoder reads from VGGT for S frames.

    tokens: aggregator outputs of the configured layers, each [B, S, P, 2C] with
    P = patch_start_idx + h * w and (h, w) = patch_hw; points: world points [B, S, H, W, 3] or
    None; pose_enc: [B, S, 9] or None.
    """

    tokens: list[Tensor]
    patch_start_idx: int
    patch_hw: tuple[int, int]
    points: Tensor | None = None
    pose_enc: Tensor | None = None


def vggt_parts(vggt: VGGT, layers: list[int], cfg: GeometryConfig) -> tuple[list[int], list[str]]:
    """(aggregator layers to run, heads to run) for `layers` and this geometry config.

    The camera head reads the last layer; the DPT heads read their intermediate layers. The same
    answer decides what is frozen as unused when VGGT is trained (see AtlasVLAPolicy).
    """
    agg = vggt.aggregator
    heads = []
    if cfg.use_camera_pose or (cfg.use_point_features and cfg.point_source == "depth"):
        heads.append("camera_head")
    if cfg.use_point_features:
        heads.append("depth_head" if cfg.point_source == "depth" else "point_head")
    needed = set(agg.resolve_layers(layers))
    for name in heads:
        head = getattr(vggt, name)
        needed.update([agg.depth - 1] if name == "camera_head" else head.intermediate_layer_idx)
    return sorted(needed), heads


def extract_vggt_features(
    vggt: VGGT, images: Tensor, layers: list[int], cfg: GeometryConfig
) -> VGGTFeatures:
    """images [B, S, 3, H, W] in [0, 1] -> VGGTFeatures, running only the heads `cfg` needs.

    The aggregator stops at the deepest layer needed. Heads run with autocast off (fp32), as the
    official model does.
    """
    agg = vggt.aggregator
    needed, heads = vggt_parts(vggt, layers, cfg)
    outs, patch_start_idx = agg(images, layers=needed)
    by_layer = dict(zip(needed, outs))
    hw = (images.shape[-2], images.shape[-1])
    patch_hw = (hw[0] // agg.patch_size, hw[1] // agg.patch_size)
    feats = VGGTFeatures(
        [by_layer[i] for i in agg.resolve_layers(layers)], patch_start_idx, patch_hw
    )
    if not heads:
        return feats
    with torch.autocast(device_type=images.device.type, enabled=False):
        by_layer = {i: t.float() for i, t in by_layer.items()}
        if "camera_head" in heads:
            iters = vggt.config.camera_num_iterations
            feats.pose_enc = vggt.camera_head(by_layer[agg.depth - 1], iters)[-1]
        if "depth_head" in heads:
            depth, _ = vggt.depth_head(by_layer, hw, patch_start_idx)
            extrinsic, intrinsic = pose_encoding_to_extri_intri(feats.pose_enc, hw)
            feats.points = unproject_depth_to_world_points(depth, extrinsic, intrinsic)
        if "point_head" in heads:
            feats.points, _ = vggt.point_head(by_layer, hw, patch_start_idx)
    return feats


def backbone_inputs(feats: VGGTFeatures, cfg: GeometryConfig) -> dict[str, Tensor]:
    """Parameter-free stage 1 (module doc): {"tokens" [B, S, T0, L*2C], "pose_enc", "points"}.

    T0 = (patch_start_idx if keep_special_tokens else 0) + tokens_per_frame. This is what a
    feature cache of a frozen backbone stores.
    """
    k, (h, w), start = math.isqrt(cfg.tokens_per_frame), feats.patch_hw, feats.patch_start_idx
    per_layer = []
    for t in feats.tokens:
        t = F.layer_norm(t, t.shape[-1:])
        B, S, _, C = t.shape
        grid = t[:, :, start:].reshape(B * S, h, w, C).permute(0, 3, 1, 2)
        grid = F.adaptive_avg_pool2d(grid, k).flatten(2).transpose(1, 2).reshape(B, S, k * k, C)
        per_layer.append(torch.cat([t[:, :, :start], grid], 2) if cfg.keep_special_tokens else grid)
    out = {"tokens": torch.cat(per_layer, dim=-1)}
    if feats.pose_enc is not None:
        out["pose_enc"] = feats.pose_enc
    if feats.points is not None:
        out["points"] = feats.points[:, :, ::POINT_STRIDE, ::POINT_STRIDE]
    return out


class PointNet(nn.Module):
    """Shared per-point MLP, then max over each cell of a k x k grid.

    points [B, S, h, w, 3] -> [B, S, k*k, dim]. Max-pooling makes a cell's feature independent of
    the order of its points (PointNet); the grid keeps it aligned with the pooled patch tokens.
    """

    def __init__(self, dim: int, grid: int, hidden: int = 64) -> None:
        super().__init__()
        self.grid = grid
        self.mlp = nn.Sequential(nn.Conv2d(3, hidden, 1), nn.GELU(), nn.Conv2d(hidden, dim, 1))
        self.norm = nn.LayerNorm(dim)

    def forward(self, points: Tensor) -> Tensor:
        B, S = points.shape[:2]
        x = points.flatten(0, 1).permute(0, 3, 1, 2).to(self.mlp[0].weight.dtype)  # [BS, 3, h, w]
        x = F.adaptive_max_pool2d(self.mlp(x), self.grid).flatten(2).transpose(1, 2)
        return self.norm(x).reshape(B, S, self.grid * self.grid, -1)


class GeometryEncoder(nn.Module):
    """Stage 2: backbone_inputs -> geometry tokens [B, S * T, dim] (T per frame, module doc)."""

    def __init__(
        self,
        cfg: GeometryConfig,
        vggt_dim: int,
        num_layers: int,
        dim: int,
        num_cameras: int,
        history: int,
        num_special: int = 5,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.num_cameras, self.history = num_cameras, history
        self.num_special = num_special if cfg.keep_special_tokens else 0
        extra = int(cfg.use_camera_pose) + int(cfg.keypoints > 0)
        self.tokens_per_frame = self.num_special + cfg.tokens_per_frame + extra
        # The affine of one LayerNorm per layer (their normalisation happened in stage 1).
        self.norm_weight = nn.Parameter(torch.ones(vggt_dim * num_layers))
        self.norm_bias = nn.Parameter(torch.zeros(vggt_dim * num_layers))
        self.proj = nn.Linear(vggt_dim * num_layers, dim)
        grid = math.isqrt(cfg.tokens_per_frame)
        self.points = PointNet(dim, grid) if cfg.use_point_features else None
        self.pose = (
            nn.Sequential(nn.Linear(POSE_DIM, dim), nn.GELU(), nn.Linear(dim, dim))
            if cfg.use_camera_pose
            else None
        )
        self.keypoints = (
            KeypointEncoder(cfg.keypoints, dim, standardize=cfg.keypoints_standardize)
            if cfg.keypoints > 0
            else None
        )
        self.slot_embed = nn.Parameter(torch.zeros(self.tokens_per_frame, dim))
        # Rows [history steps | cameras]; a frame's embedding is its step's row plus its camera's.
        # One parameter, not two: two parameters fed by the broadcast sum of their views would
        # both adopt views of ONE gradient tensor as .grad (autograd's AccumulateGrad steals the
        # incoming buffer), and every later in-place update (accumulation, clipping, unscaling)
        # would then hit both. Initialized as the two were: slot, cameras, history steps.
        self.frame_embed = nn.Parameter(torch.zeros(history + num_cameras, dim))
        nn.init.trunc_normal_(self.slot_embed, std=0.02)
        nn.init.trunc_normal_(self.frame_embed[history:], std=0.02)
        nn.init.trunc_normal_(self.frame_embed[:history], std=0.02)

    def forward(self, inputs: dict[str, Tensor]) -> Tensor:
        """inputs from `backbone_inputs` (+ "keypoints" [B, S, 2K], what `self.keypoints` found in
        the frames) -> [B, S * T, dim]; frame s = h * num_cameras + c."""
        x = inputs["tokens"].to(self.proj.weight.dtype)
        B, S = x.shape[:2]
        x = self.proj(x * self.norm_weight + self.norm_bias)  # [B, S, T0, dim]
        if self.points is not None:
            patches = x[:, :, self.num_special :] + self.points(inputs["points"])
            x = torch.cat([x[:, :, : self.num_special], patches], dim=2)
        if self.pose is not None:
            pose = self.pose(inputs["pose_enc"].to(x.dtype)).unsqueeze(2)  # [B, S, 1, dim]
            x = torch.cat([x, pose], dim=2)
        if self.keypoints is not None:
            x = torch.cat([x, self.keypoints.token(inputs["keypoints"].to(x.dtype))], dim=2)
        x = x + self.slot_embed + self._frame_embed(S)
        return x.reshape(B, S * self.tokens_per_frame, -1)

    def _frame_embed(self, num_frames: int) -> Tensor:
        """[S, 1, dim]: camera + history-step embedding of each frame (s = h * cams + c)."""
        if num_frames != self.num_cameras * self.history:
            raise ValueError(
                f"got {num_frames} frames; expected cameras x history = "
                f"{self.num_cameras} x {self.history}"
            )
        steps, cameras = self.frame_embed.split([self.history, self.num_cameras])
        emb = steps[:, None] + cameras[None, :]  # [history, cams, dim]
        return emb.reshape(num_frames, 1, -1)

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        upgrade_state_dict(state_dict, prefix)  # earlier checkpoints' names (below)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )


# The parameters earlier versions held in place of today's, in the order they were registered:
# the order in which an optimizer built from those versions holds their states (optimizer.pt is
# keyed by position, not by name). Their rows are joined in `upgrade_state_dict`'s order, which
# differs (history steps first).
EARLIER_PARAMETERS: dict[str, tuple[str, ...]] = {"frame_embed": ("camera_embed", "history_embed")}


def upgrade_state_dict(state: dict[str, Tensor], prefix: str = "") -> None:
    """Rename, in place, the parameters of earlier versions under `prefix` (e.g. "geometry.").

    Earlier policies held the frame embedding as `history_embed` [history, dim] and
    `camera_embed` [cams, dim]; they become the rows of `frame_embed`, which computes exactly
    the same embedding. Every `load_state_dict` of a GeometryEncoder goes through this, and
    the export loader calls it before checking the keys; a resumed optimizer state goes through
    it too (atlas.checkpoint.compat.upgrade_optimizer_state), per moment tensor.
    """
    history, cameras = f"{prefix}history_embed", f"{prefix}camera_embed"
    if history in state and cameras in state:
        state[f"{prefix}frame_embed"] = torch.cat([state.pop(history), state.pop(cameras)])
