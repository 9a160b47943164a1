"""VGGT (Visual Geometry Grounded Transformer, CVPR 2025), reimplemented checkpoint-compatibly.

Quick use:
    model = build_vggt("tiny")                                   # random init, CPU-friendly
    tokens, patch_start_idx = model.aggregator(images, layers=[-1])  # images [B, S, 3, H, W]
    preds = model(images)        # pose_enc, depth, world_points (+ confidences)
    vggt = load_pretrained_vggt("model.pt")                      # official VGGT-1B weights
"""

from atlas.config.vggt import VGGT_PRESETS, VGGTConfig, get_vggt_preset
from atlas.models.vggt.aggregator import Aggregator
from atlas.models.vggt.camera import (
    extri_intri_to_pose_encoding,
    mat_to_quat,
    pose_encoding_to_extri_intri,
    quat_to_mat,
    unproject_depth_to_world_points,
)
from atlas.models.vggt.camera_head import CameraHead
from atlas.models.vggt.dpt_head import DPTHead
from atlas.models.vggt.loading import (
    WeightsError,
    load_pretrained_vggt,
    load_vggt_state_dict,
    load_vggt_weights,
    read_state_dict,
)
from atlas.models.vggt.model import VGGT, build_vggt

__all__ = [
    "VGGT",
    "VGGT_PRESETS",
    "Aggregator",
    "CameraHead",
    "WeightsError",
    "DPTHead",
    "VGGTConfig",
    "build_vggt",
    "extri_intri_to_pose_encoding",
    "get_vggt_preset",
    "load_pretrained_vggt",
    "load_vggt_state_dict",
    "load_vggt_weights",
    "mat_to_quat",
    "pose_encoding_to_extri_intri",
    "quat_to_mat",
    "read_state_dict",
    "unproject_depth_to_world_points",
]
