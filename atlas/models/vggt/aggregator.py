"""The VGGT Aggregator: DINO patch tokens + camera/register tokens, then alternating attention.

Each layer i runs a frame block (attention inside each frame) then a global block (attention
across all frames of a sequence) and emits concat([frame_i, global_i]) of width 2C.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from atlas.config.vggt import VGGTConfig
from atlas.models.vggt.dino import DinoVisionTransformer
from atlas.models.vggt.layers import Block, RopeTables, init_transformer_weights, rope_2d_tables

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def expand_special_tokens(token: Tensor, B: int, S: int) -> Tensor:
    """[1, 2, X, C] -> [B*S, X, C]: index 0 for the first frame, index 1 for every other frame."""
    first = token[:, :1].expand(B, 1, *token.shape[2:])
    others = token[:, 1:].expand(B, S - 1, *token.shape[2:])
    return torch.cat((first, others), dim=1).reshape(B * S, *token.shape[2:])


def patch_positions(h: int, w: int, num_special: int, device: torch.device) -> Tensor:
    """RoPE (row, col) positions [num_special + h*w, 2]: special tokens at (0, 0), patches +1."""
    rows = torch.arange(h, device=device).repeat_interleave(w)
    cols = torch.arange(w, device=device).repeat(h)
    patches = torch.stack((rows, cols), dim=-1) + 1
    special = torch.zeros(num_special, 2, dtype=patches.dtype, device=device)
    return torch.cat((special, patches), dim=0)


class Aggregator(nn.Module):
    """images [B, S, 3, H, W] in [0, 1] -> (list of [B, S, P, 2C] tokens, patch_start_idx).

    P = patch_start_idx + (H/14)*(W/14); per frame the tokens are [camera | registers | patches].
    """

    def __init__(self, config: VGGTConfig) -> None:
        super().__init__()
        c = config
        self.depth = c.depth
        self.patch_size = c.patch_size
        self.aa_block_size = c.aa_block_size
        self.head_dim = c.head_dim
        self.rope_freq = c.rope_freq
        self.patch_start_idx = c.patch_start_idx
        self.activation_checkpointing = c.activation_checkpointing
        self.camera_token = nn.Parameter(torch.zeros(1, 2, 1, c.embed_dim))
        self.register_token = nn.Parameter(torch.zeros(1, 2, c.num_register_tokens, c.embed_dim))
        self.patch_embed = DinoVisionTransformer(
            img_size=c.img_size,
            patch_size=c.patch_size,
            embed_dim=c.dino_embed_dim,
            depth=c.dino_depth,
            num_heads=c.dino_num_heads,
            mlp_ratio=c.dino_mlp_ratio,
            num_register_tokens=c.num_register_tokens,
            qkv_bias=c.qkv_bias,
            proj_bias=c.proj_bias,
            ffn_bias=c.ffn_bias,
            init_values=c.dino_init_values,
        )
        self.patch_embed.activation_checkpointing = c.activation_checkpointing
        self.frame_blocks = nn.ModuleList(self._block(c) for _ in range(c.depth))
        self.global_blocks = nn.ModuleList(self._block(c) for _ in range(c.depth))
        self.init_non_persistent_buffers(self.camera_token.device)
        self.reset_parameters()

    @staticmethod
    def _block(c: VGGTConfig) -> Block:
        return Block(
            c.embed_dim,
            c.num_heads,
            c.mlp_ratio,
            qkv_bias=c.qkv_bias,
            proj_bias=c.proj_bias,
            ffn_bias=c.ffn_bias,
            init_values=c.init_values,
            qk_norm=c.qk_norm,
        )

    def init_non_persistent_buffers(self, device: torch.device | str) -> None:
        """(Re)create the ImageNet normalisation buffers; they are not in the state dict.

        Needed after building on the meta device and loading weights with assign=True.
        """
        mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=device).view(1, 1, 3, 1, 1)
        self.register_buffer("_resnet_mean", mean, persistent=False)
        self.register_buffer("_resnet_std", std, persistent=False)

    def reset_parameters(self) -> None:
        """Special tokens N(0, 1e-6) as the official init; timm init for the block Linears."""
        nn.init.normal_(self.camera_token, std=1e-6)
        nn.init.normal_(self.register_token, std=1e-6)
        init_transformer_weights(self.frame_blocks)
        init_transformer_weights(self.global_blocks)

    def resolve_layers(self, layers: Sequence[int] | None) -> list[int]:
        """Output indices in [0, depth); negative indices count from the end; None means all."""
        if layers is None:
            return list(range(self.depth))
        resolved = [i + self.depth if i < 0 else i for i in layers]
        bad = [i for i, r in zip(layers, resolved) if not 0 <= r < self.depth]
        if bad or not resolved:
            raise ValueError(
                f"layers {list(layers)} invalid for an aggregator of depth {self.depth}"
            )
        return resolved

    def _run_block(self, block: Block, x: Tensor, rope: RopeTables | None) -> Tensor:
        if self.activation_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(block, x, rope, use_reentrant=False)
        return block(x, rope)

    def embed(self, images: Tensor) -> Tensor:
        """images [B, S, 3, H, W] in [0, 1] -> initial tokens [B*S, P, C] (special + DINO)."""
        B, S, _, H, W = images.shape
        images = (images - self._resnet_mean) / self._resnet_std
        patch_tokens = self.patch_embed(images.reshape(B * S, 3, H, W))
        camera = expand_special_tokens(self.camera_token, B, S)
        registers = expand_special_tokens(self.register_token, B, S)
        return torch.cat((camera, registers, patch_tokens), dim=1)

    def forward(
        self, images: Tensor, layers: Sequence[int] | None = None
    ) -> tuple[list[Tensor], int]:
        """Run the aggregator, stopping after the deepest requested layer.

        images: [B, S, 3, H, W] in [0, 1]; layers: output indices to return (default: all
        `depth`, as the official model). Returns (tokens, patch_start_idx) where tokens[j] is the
        [B, S, P, 2C] output of layer layers[j]; channels [:C] come from the frame block and
        [C:] from the global block of that layer.
        """
        wanted = self.resolve_layers(layers)
        B, S, _, H, W = images.shape
        tokens = self.embed(images)
        P, C = tokens.shape[1:]
        rope = None
        if self.rope_freq > 0:
            pos = patch_positions(
                H // self.patch_size, W // self.patch_size, self.patch_start_idx, images.device
            )
            rope = rope_2d_tables(pos, self.head_dim, self.rope_freq)
        # Global attention sees S*P tokens; a token's position is its in-frame position.
        rope_global = None if rope is None else (rope[0].repeat(S, 1), rope[1].repeat(S, 1))
        keep = set(wanted)
        outputs: dict[int, Tensor] = {}
        k = self.aa_block_size
        for start in range(0, max(wanted) + 1, k):
            frame_out, global_out = [], []
            for i in range(start, start + k):
                tokens = self._run_block(self.frame_blocks[i], tokens.reshape(B * S, P, C), rope)
                frame_out.append(tokens.reshape(B, S, P, C))
            for i in range(start, start + k):
                tokens = self._run_block(
                    self.global_blocks[i], tokens.reshape(B, S * P, C), rope_global
                )
                global_out.append(tokens.reshape(B, S, P, C))
            for j, i in enumerate(range(start, start + k)):
                if i in keep:
                    outputs[i] = torch.cat((frame_out[j], global_out[j]), dim=-1)
        return [outputs[i] for i in wanted], self.patch_start_idx
