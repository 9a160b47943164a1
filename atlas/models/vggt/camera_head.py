"""The VGGT camera head: iterative refinement of the "absT_quaR_FoV" pose encoding.

The camera token of the last aggregator layer is modulated (adaLN) by an embedding of the current
pose estimate, passed through a small transformer over the frames, and decoded into a pose update.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from atlas.models.vggt.layers import Block, Mlp, init_transformer_weights

POSE_ENCODING_DIM = 9  # [tx, ty, tz, qx, qy, qz, qw, fov_h, fov_w]


def activate_pose_part(x: Tensor, act: str) -> Tensor:
    """Output activation of one part of the pose encoding (official `base_pose_act`)."""
    if act == "linear":
        return x
    if act == "inv_log":
        return torch.sign(x) * torch.expm1(torch.abs(x))
    if act == "exp":
        return torch.exp(x)
    if act == "relu":
        return F.relu(x)
    raise ValueError(f"unknown pose activation {act!r}")


class CameraHead(nn.Module):
    """Camera tokens [B, S, P, 2C] (last layer) -> list of `num_iterations` poses [B, S, 9]."""

    def __init__(
        self,
        dim_in: int = 2048,
        trunk_depth: int = 4,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        init_values: float = 0.01,
        trans_act: str = "linear",
        quat_act: str = "linear",
        fl_act: str = "relu",
    ) -> None:
        super().__init__()
        self.acts = (trans_act, quat_act, fl_act)
        self.trunk = nn.Sequential(
            *(
                Block(dim_in, num_heads, mlp_ratio, init_values=init_values)
                for _ in range(trunk_depth)
            )
        )
        self.token_norm = nn.LayerNorm(dim_in)
        self.trunk_norm = nn.LayerNorm(dim_in)
        self.empty_pose_tokens = nn.Parameter(torch.zeros(1, 1, POSE_ENCODING_DIM))
        self.embed_pose = nn.Linear(POSE_ENCODING_DIM, dim_in)
        # adaLN: the pose embedding yields (shift, scale, gate) for the normed camera token.
        self.poseLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim_in, 3 * dim_in))
        self.adaln_norm = nn.LayerNorm(dim_in, elementwise_affine=False, eps=1e-6)
        self.pose_branch = Mlp(dim_in, dim_in // 2, POSE_ENCODING_DIM)
        init_transformer_weights(self)

    def activate(self, pred: Tensor) -> Tensor:
        """Pre-activation encoding [..., 9] -> activated (T | quaternion | FoV parts)."""
        trans, quat, fov = pred[..., :3], pred[..., 3:7], pred[..., 7:]
        parts = (trans, quat, fov)
        return torch.cat([activate_pose_part(p, a) for p, a in zip(parts, self.acts)], dim=-1)

    def forward(self, tokens: Tensor, num_iterations: int = 4) -> list[Tensor]:
        """tokens: last aggregator output [B, S, P, 2C]. Returns `num_iterations` [B, S, 9]."""
        tok = self.token_norm(tokens[:, :, 0])  # camera token, [B, S, 2C]; fixed across steps
        B, S, _ = tok.shape
        pred: Tensor | None = None
        preds = []
        for _ in range(num_iterations):
            if pred is None:
                pose_in = self.embed_pose(self.empty_pose_tokens.expand(B, S, -1))
            else:
                # The accumulated pre-activation estimate is fed back without gradient.
                pose_in = self.embed_pose(pred.detach())
            shift, scale, gate = self.poseLN_modulation(pose_in).chunk(3, dim=-1)
            x = gate * (self.adaln_norm(tok) * (1 + scale) + shift) + tok
            for block in self.trunk:  # attention over the S frames
                x = block(x)
            delta = self.pose_branch(self.trunk_norm(x))
            pred = delta if pred is None else pred + delta
            preds.append(self.activate(pred))
        return preds
