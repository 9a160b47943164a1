"""Action head: fused action queries -> a chunk of 7-DoF actions.

One output row per chunk step: 6 pose-delta values (translation xyz, rotation rpy; LIBERO's
OSC_POSE action) and 1 gripper value, all in the NORMALIZED action space of the dataset. H = 1
gives the documents' single action per observation ([B, 1, 7]; squeeze for [B, 7]). With
`use_proprio` the 8-value robot state (ee_states 6 + gripper_states 2, normalized) is embedded and
concatenated to every query, so the head can act relative to where the arm is; with
`use_keypoints` the pixel keypoints of every frame (atlas.models.keypoints) are embedded and
concatenated the same way, so it can act relative to where the objects are.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from atlas.config.schema import ActionHeadConfig

ACTION_DIM = 7  # 6-DoF pose delta + gripper
POSE_DIM = 6
PROPRIO_DIM = 8  # ee_states (6) + gripper_states (2)


class ActionHead(nn.Module):
    """queries [B, Hc, D] (+ proprio [B, 8], + keypoints [B, S, 2K]) -> actions [B, Hc, 7].

    keypoint_dim: S * 2K, the keypoint values of one sample (0 unless cfg.use_keypoints). With
    the BCE gripper loss the last channel is a logit (closed = positive), see VLALoss.
    """

    def __init__(self, cfg: ActionHeadConfig, dim: int, keypoint_dim: int = 0) -> None:
        super().__init__()
        self.chunk_size = cfg.chunk_size
        h = cfg.hidden_dim
        self.proprio = (
            nn.Sequential(nn.Linear(PROPRIO_DIM, h), nn.GELU()) if cfg.use_proprio else None
        )
        if cfg.use_keypoints and keypoint_dim < 1:
            raise ValueError("action_head.use_keypoints needs geometry.keypoints > 0")
        self.keypoints = (
            nn.Sequential(nn.Linear(keypoint_dim, h), nn.GELU()) if cfg.use_keypoints else None
        )
        in_dim = dim + h * (int(cfg.use_proprio) + int(cfg.use_keypoints))
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, cfg.hidden_dim),
            nn.GELU(),
            nn.Linear(cfg.hidden_dim, cfg.hidden_dim),
            nn.GELU(),
            nn.Linear(cfg.hidden_dim, ACTION_DIM),
        )

    def forward(
        self, queries: Tensor, proprio: Tensor | None = None, keypoints: Tensor | None = None
    ) -> Tensor:
        parts = [queries]
        for name, embed, x in (
            ("proprio", self.proprio, proprio),
            ("keypoints", self.keypoints, keypoints),
        ):
            if embed is None:
                continue
            if x is None:
                raise ValueError(f"action_head.use_{name} is set but no {name!r} were given")
            state = embed(x.flatten(1).to(queries.dtype))  # [B, hidden], one per sample
            parts.append(state.unsqueeze(1).expand(-1, queries.shape[1], -1))
        return self.mlp(torch.cat(parts, -1))
