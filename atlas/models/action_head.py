"""Action head: fused action queries -> a chunk of 7-DoF actions.

One output row per chunk step: 6 pose-delta values (translation xyz, rotation rpy; LIBERO's
OSC_POSE action) and 1 gripper value, all in the NORMALIZED action space of the dataset. H = 1
gives the documents' single action per observation ([B, 1, 7]; squeeze for [B, 7]). With
`use_proprio` the 8-value robot state (ee_states 6 + gripper_states 2, normalized) is embedded and
concatenated to every query, so the head can act relative to where the arm is.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from atlas.config.schema import ActionHeadConfig

ACTION_DIM = 7  # 6-DoF pose delta + gripper
POSE_DIM = 6
PROPRIO_DIM = 8  # ee_states (6) + gripper_states (2)


class ActionHead(nn.Module):
    """queries [B, Hc, D] (+ proprio [B, 8]) -> actions [B, Hc, 7].

    With the BCE gripper loss the last channel is a logit (closed = positive), see VLALoss.
    """

    def __init__(self, cfg: ActionHeadConfig, dim: int) -> None:
        super().__init__()
        self.chunk_size = cfg.chunk_size
        self.proprio = (
            nn.Sequential(nn.Linear(PROPRIO_DIM, cfg.hidden_dim), nn.GELU())
            if cfg.use_proprio
            else None
        )
        in_dim = dim + (cfg.hidden_dim if cfg.use_proprio else 0)
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, cfg.hidden_dim),
            nn.GELU(),
            nn.Linear(cfg.hidden_dim, cfg.hidden_dim),
            nn.GELU(),
            nn.Linear(cfg.hidden_dim, ACTION_DIM),
        )

    def forward(self, queries: Tensor, proprio: Tensor | None = None) -> Tensor:
        if self.proprio is not None:
            if proprio is None:
                raise ValueError("action_head.use_proprio is set but the batch has no 'proprio'")
            state = self.proprio(proprio.to(queries.dtype))  # [B, hidden]
            queries = torch.cat([queries, state.unsqueeze(1).expand(-1, queries.shape[1], -1)], -1)
        return self.mlp(queries)
