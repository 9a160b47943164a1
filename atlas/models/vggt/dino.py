"""DINOv2 ViT with register tokens: the patch embedding of the VGGT aggregator.

Same layout as DINOv2 `vit_large(patch_size=14, num_register_tokens=4)` ("dinov2_vitl14_reg"),
with configurable width, depth and heads. Only the normalised patch tokens are used by VGGT.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from atlas.models.vggt.layers import Block, init_transformer_weights


class PatchEmbed(nn.Module):
    """Non-overlapping conv patchify: [B, 3, H, W] -> [B, (H/p)*(W/p), C], row-major."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        H, W = x.shape[-2:]
        if H % self.patch_size or W % self.patch_size:
            raise ValueError(f"image size {H}x{W} is not a multiple of patch {self.patch_size}")
        return self.proj(x).flatten(2).transpose(1, 2)


class DinoVisionTransformer(nn.Module):
    """DINOv2 ViT with registers; `forward` returns normalised patch tokens [B, h*w, C]."""

    def __init__(
        self,
        img_size: int = 518,
        patch_size: int = 14,
        embed_dim: int = 1024,
        depth: int = 24,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        num_register_tokens: int = 4,
        qkv_bias: bool = True,
        proj_bias: bool = True,
        ffn_bias: bool = True,
        init_values: float = 1.0,
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.num_register_tokens = num_register_tokens
        grid = img_size // patch_size
        # Parameter registration order fixes the checkpoint key order.
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid * grid, embed_dim))
        self.register_tokens = nn.Parameter(torch.zeros(1, num_register_tokens, embed_dim))
        # Unused by VGGT (no masking) but part of the checkpoint; frozen as in the official model.
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim), requires_grad=False)
        self.patch_embed = PatchEmbed(patch_size, 3, embed_dim)
        self.blocks = nn.ModuleList(
            Block(
                embed_dim,
                num_heads,
                mlp_ratio,
                qkv_bias=qkv_bias,
                proj_bias=proj_bias,
                ffn_bias=ffn_bias,
                init_values=init_values,
                norm_eps=1e-6,
            )
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        # Set by the aggregator: recompute blocks in backward to save activation memory.
        self.activation_checkpointing = False
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """DINOv2 init (pos_embed trunc-normal 0.02, tokens N(0, 1e-6), timm Linear init)."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        nn.init.normal_(self.register_tokens, std=1e-6)
        init_transformer_weights(self)

    def interpolate_pos_encoding(self, h: int, w: int, dtype: torch.dtype) -> Tensor:
        """Positional embedding [1, 1 + h*w, C] for an h x w patch grid.

        The stored square grid is resized with bicubic+antialias to an explicit (h, w) size in
        fp32, as DINOv2 with interpolate_offset=0. It is returned untouched only for a square grid
        of the stored size (resizing to the same size would give identical values anyway).
        """
        num_stored = self.pos_embed.shape[1] - 1
        if h * w == num_stored and h == w:
            return self.pos_embed
        pos_embed = self.pos_embed.float()
        cls_pos, patch_pos = pos_embed[:, :1], pos_embed[:, 1:]
        side = int(round(num_stored**0.5))
        dim = pos_embed.shape[-1]
        # The stored grid is row-major and channels-last: go through [1, side, side, C].
        grid = patch_pos.reshape(1, side, side, dim).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(h, w), mode="bicubic", antialias=True)
        patch_pos = grid.permute(0, 2, 3, 1).reshape(1, h * w, dim)
        return torch.cat((cls_pos, patch_pos), dim=1).to(dtype)

    def forward(self, images: Tensor) -> Tensor:
        """images: [B, 3, H, W] (ImageNet-normalised) -> x_norm_patchtokens [B, h*w, C]."""
        B, _, H, W = images.shape
        x = self.patch_embed(images)
        x = torch.cat((self.cls_token.expand(B, -1, -1), x), dim=1)
        x = x + self.interpolate_pos_encoding(H // self.patch_size, W // self.patch_size, x.dtype)
        # Registers go right after cls and carry no positional embedding.
        registers = self.register_tokens.expand(B, -1, -1)
        x = torch.cat((x[:, :1], registers, x[:, 1:]), dim=1)
        use_ckpt = self.activation_checkpointing and self.training and torch.is_grad_enabled()
        for block in self.blocks:
            x = checkpoint(block, x, use_reentrant=False) if use_ckpt else block(x)
        return self.norm(x)[:, 1 + self.num_register_tokens :]
