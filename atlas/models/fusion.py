"""Multimodal fusion: learned action queries read language and geometry through cross-attention.

Inputs: geometry tokens G [B, Ng, D] (GeometryEncoder), language LanguageFeatures (pooled [B, Dl],
tokens [B, L, Dl], mask [B, L]). Output: one fused vector per chunk step, [B, Hc, D].

Attention pattern (D = fusion.dim, every block pre-norm, residual, F.scaled_dot_product_attention):

    context  = [ pooled language (1) | language tokens (L, padding masked) | FiLM(G) (Ng) ]
               each part projected to D and tagged with a learned modality embedding;
               FiLM(G) = G * (1 + scale(l)) + shift(l) with l the pooled instruction, so every
               geometry token already knows the task before any attention.
    queries  = Hc learned action-query tokens (one per chunk step)

    for each of `depth` layers:
        queries <- queries + SelfAttn(queries)                 Hc x Hc, no mask: the chunk steps
                                                               coordinate with each other
        queries <- queries + CrossAttn(queries -> context)     Hc x (1 + L + Ng), padding masked
        queries <- queries + MLP(queries)

The context is not updated between layers (a decoder over a fixed memory), so its cost is one
projection, and the attention cost is O(Hc * (L + Ng)) per layer, small next to the backbones.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from atlas.config.schema import FusionConfig
from atlas.models.language import LanguageFeatures


class MultiHeadAttention(nn.Module):
    """Attention of x [B, N, D] over context [B, M, D] (context=x for self-attention).

    key_mask [B, M] is True on tokens that may be attended to.
    """

    def __init__(self, dim: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.dropout = dropout

    def forward(self, x: Tensor, context: Tensor, key_mask: Tensor | None = None) -> Tensor:
        B, N, D = x.shape
        q = self.q(x).reshape(B, N, self.num_heads, -1).transpose(1, 2)
        k, v = self.kv(context).reshape(B, context.shape[1], 2, self.num_heads, -1).unbind(2)
        k, v = k.transpose(1, 2), v.transpose(1, 2)  # [B, heads, M, head_dim]
        mask = None if key_mask is None else key_mask[:, None, None, :]
        p = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        return self.proj(out.transpose(1, 2).reshape(B, N, D))


class FusionLayer(nn.Module):
    """Self-attention among queries, cross-attention to the context, MLP; all pre-norm."""

    def __init__(self, cfg: FusionConfig) -> None:
        super().__init__()
        d = cfg.dim
        self.norm_self = nn.LayerNorm(d)
        self.self_attn = MultiHeadAttention(d, cfg.num_heads, cfg.dropout)
        self.norm_cross = nn.LayerNorm(d)
        self.norm_context = nn.LayerNorm(d)
        self.cross_attn = MultiHeadAttention(d, cfg.num_heads, cfg.dropout)
        self.norm_mlp = nn.LayerNorm(d)
        hidden = int(d * cfg.mlp_ratio)
        self.mlp = nn.Sequential(
            nn.Linear(d, hidden), nn.GELU(), nn.Dropout(cfg.dropout), nn.Linear(hidden, d)
        )
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, q: Tensor, context: Tensor, key_mask: Tensor) -> Tensor:
        """q [B, Hc, D], context [B, M, D], key_mask [B, M] -> [B, Hc, D]."""
        h = self.norm_self(q)
        q = q + self.drop(self.self_attn(h, h))
        q = q + self.drop(self.cross_attn(self.norm_cross(q), self.norm_context(context), key_mask))
        return q + self.drop(self.mlp(self.norm_mlp(q)))


class FusionTransformer(nn.Module):
    """(geometry [B, Ng, D], LanguageFeatures) -> fused action queries [B, Hc, D]."""

    def __init__(self, cfg: FusionConfig, language_dim: int, chunk_size: int) -> None:
        super().__init__()
        d = cfg.dim
        # The language width (4096 for LLaMA-2-7B) is brought to D here, in a trainable module,
        # so the language encoder itself can stay frozen.
        self.lang_norm = nn.LayerNorm(language_dim)
        self.lang_proj = nn.Linear(language_dim, d)
        self.film = nn.Linear(d, 2 * d)
        nn.init.zeros_(self.film.weight)  # FiLM starts as the identity
        nn.init.zeros_(self.film.bias)
        self.modality_embed = nn.Parameter(torch.zeros(3, d))  # pooled, language token, geometry
        self.queries = nn.Parameter(torch.zeros(chunk_size, d))
        for p in (self.modality_embed, self.queries):
            nn.init.trunc_normal_(p, std=0.02)
        self.layers = nn.ModuleList(FusionLayer(cfg) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(d)

    def forward(self, geometry: Tensor, language: LanguageFeatures) -> Tensor:
        B = geometry.shape[0]
        dtype = self.lang_proj.weight.dtype
        pooled = self.lang_proj(self.lang_norm(language.pooled.to(dtype)))  # [B, D]
        words = self.lang_proj(self.lang_norm(language.tokens.to(dtype)))  # [B, L, D]
        shift, scale = self.film(pooled).unsqueeze(1).chunk(2, dim=-1)
        geometry = geometry * (1 + scale) + shift
        emb = self.modality_embed
        context = torch.cat(
            [pooled.unsqueeze(1) + emb[0], words + emb[1], geometry + emb[2]], dim=1
        )
        keep = torch.ones(B, 1, dtype=torch.bool, device=geometry.device)
        geo_keep = keep.expand(B, geometry.shape[1])
        key_mask = torch.cat([keep, language.mask.to(geometry.device), geo_keep], dim=1)
        q = self.queries.unsqueeze(0).expand(B, -1, -1)
        for layer in self.layers:
            q = layer(q, context, key_mask)
        return self.norm(q)
