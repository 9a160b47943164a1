"""Transformer building blocks shared by DINO, the aggregator and the camera head.

Module and parameter names (`norm1`, `attn.qkv`, `attn.q_norm`, `ls1.gamma`, `mlp.fc1`, ...)
match the official checkpoint, so state dicts load without renaming.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# (cos, sin), each [N, head_dim] (or broadcastable to [B, heads, N, head_dim]).
RopeTables = tuple[Tensor, Tensor]


class LayerScale(nn.Module):
    """Per-channel residual-branch scale: x * gamma, gamma [C]."""

    def __init__(self, dim: int, init_values: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(init_values * torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


class Mlp(nn.Module):
    """fc1 -> exact GELU -> fc2, on [..., in_dim] -> [..., out_dim]."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, bias: bool = True) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden_dim, bias=bias)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, out_dim, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


def rope_2d_tables(
    pos_yx: Tensor, head_dim: int, base: float, dtype: torch.dtype | None = None
) -> RopeTables:
    """cos/sin tables of the 2D rotary embedding for integer positions.

    pos_yx: [N, 2] integer (row, col) positions. Returns (cos, sin), each [N, head_dim]: the first
    head_dim/2 channels rotate by the row, the last head_dim/2 by the column, as the official
    `RotaryPositionEmbedding2D`. Computed in fp32 (then cast to `dtype`) for accuracy.
    """
    half = head_dim // 2
    exponents = torch.arange(0, half, 2, device=pos_yx.device).float() / half
    inv_freq = 1.0 / (base**exponents)  # [half/2]
    angles = pos_yx.float()[..., None] * inv_freq  # [N, 2, half/2]
    angles = torch.cat((angles, angles), dim=-1).flatten(-2)  # [N, head_dim]: y half, x half
    cos, sin = angles.cos(), angles.sin()
    if dtype is not None:
        cos, sin = cos.to(dtype), sin.to(dtype)
    return cos, sin


def apply_rope_2d(x: Tensor, rope: RopeTables) -> Tensor:
    """Rotate x [..., N, head_dim] with half-split rotation inside each (row, col) half."""
    cos, sin = rope
    # rotate_half per half: [a, b] -> [-b, a], done on the [2 (y/x), 2 (a/b), q] view at once.
    parts = x.unflatten(-1, (2, 2, -1))
    rotated = torch.stack((-parts[..., 1, :], parts[..., 0, :]), dim=-2).flatten(-3)
    return x * cos.to(x.dtype) + rotated * sin.to(x.dtype)


class Attention(nn.Module):
    """Multi-head self-attention with optional qk-norm and 2D RoPE, fused via SDPA.

    [B, N, C] -> [B, N, C]. qkv output channels are ordered (q|k|v) x heads x head_dim (timm).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qkv_bias: bool = True,
        proj_bias: bool = True,
        qk_norm: bool = False,
        norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        # Registration order (qkv, q_norm, k_norm, proj) fixes the checkpoint key order.
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.q_norm = nn.LayerNorm(self.head_dim, eps=norm_eps) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(self.head_dim, eps=norm_eps) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim, bias=proj_bias)

    def forward(self, x: Tensor, rope: RopeTables | None = None) -> Tensor:
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each [B, heads, N, head_dim]
        q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:  # after the qk-norm, as the official model
            q, k = apply_rope_2d(q, rope), apply_rope_2d(k, rope)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(B, N, C))


class Block(nn.Module):
    """Pre-norm transformer block with LayerScale: [B, N, C] -> [B, N, C]."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        proj_bias: bool = True,
        ffn_bias: bool = True,
        init_values: float = 0.01,
        qk_norm: bool = False,
        norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        # qk-norm LayerNorms always use eps 1e-5 (nn.LayerNorm default), even inside DINO.
        self.attn = Attention(dim, num_heads, qkv_bias, proj_bias, qk_norm)
        self.ls1 = LayerScale(dim, init_values)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), dim, bias=ffn_bias)
        self.ls2 = LayerScale(dim, init_values)

    def forward(self, x: Tensor, rope: RopeTables | None = None) -> Tensor:
        x = x + self.ls1(self.attn(self.norm1(x), rope))
        return x + self.ls2(self.mlp(self.norm2(x)))


def init_transformer_weights(module: nn.Module) -> None:
    """ViT-style init for random-weight training: trunc-normal(0.02) Linear, zero biases.

    Pretrained weights overwrite all of this; it only matters for presets trained from scratch.
    """
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
