"""The VGGT DPT head: dense per-pixel prediction (depth or world points) with a confidence.

Four aggregator layers are projected, resized into a 4x/2x/1x/0.5x pyramid, fused coarse to fine
(RefineNet style) and decoded at full image resolution.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

PREDICTION_HIDDEN = 32  # output_conv2 hidden width: a fixed constant in the official head


def uv_grid(width: int, height: int, aspect_ratio: float, dtype: torch.dtype, device) -> Tensor:
    """Normalised (u, v) grid [height, width, 2] spanning the image diagonal (official layout)."""
    diag = (aspect_ratio**2 + 1.0) ** 0.5
    span_x, span_y = aspect_ratio / diag, 1.0 / diag
    left_x, right_x = -span_x * (width - 1) / width, span_x * (width - 1) / width
    top_y, bottom_y = -span_y * (height - 1) / height, span_y * (height - 1) / height
    xs = torch.linspace(left_x, right_x, steps=width, dtype=dtype, device=device)
    ys = torch.linspace(top_y, bottom_y, steps=height, dtype=dtype, device=device)
    uu, vv = torch.meshgrid(xs, ys, indexing="xy")
    return torch.stack((uu, vv), dim=-1)


def sincos_embed(pos: Tensor, dim: int, omega_0: float = 100.0) -> Tensor:
    """pos [N] -> [N, dim] = [sin(pos*w), cos(pos*w)], w_i = omega_0^(-i/(dim/2)).

    Computed in float64 (as the official head; float32 differs by ~1e-6), returned as float32.
    """
    omega = torch.arange(dim // 2, dtype=torch.float64, device=pos.device) / (dim / 2.0)
    omega = 1.0 / omega_0**omega
    angles = pos.reshape(-1).double()[:, None] * omega[None]
    return torch.cat((angles.sin(), angles.cos()), dim=1).float()


def add_pos_embed(x: Tensor, image_w: int, image_h: int, ratio: float = 0.1) -> Tensor:
    """x [N, C, h, w] + 0.1 * sincos embedding of the image-aspect uv grid (C/2 u, C/2 v)."""
    h, w = x.shape[-2:]
    grid = uv_grid(w, h, image_w / image_h, x.dtype, x.device).reshape(-1, 2)
    C = x.shape[1]
    emb = torch.cat((sincos_embed(grid[:, 0], C // 2), sincos_embed(grid[:, 1], C // 2)), dim=-1)
    emb = (emb.view(h, w, C) * ratio).permute(2, 0, 1)
    return x + emb[None].to(x.dtype)


def activate_dense(out: Tensor, activation: str, conf_activation: str) -> tuple[Tensor, Tensor]:
    """Raw head output [N, D, H, W] -> (prediction [N, H, W, D-1], confidence [N, H, W])."""
    fmap = out.permute(0, 2, 3, 1)
    xyz, conf = fmap[..., :-1], fmap[..., -1]
    if activation == "exp":
        pred = torch.exp(xyz)
    elif activation == "inv_log":
        pred = torch.sign(xyz) * torch.expm1(torch.abs(xyz))
    elif activation == "norm_exp":
        d = xyz.norm(dim=-1, keepdim=True).clamp(min=1e-8)
        pred = (xyz / d) * torch.expm1(d)
    elif activation == "norm":
        pred = xyz / xyz.norm(dim=-1, keepdim=True)
    elif activation == "relu":
        pred = F.relu(xyz)
    elif activation == "sigmoid":
        pred = torch.sigmoid(xyz)
    elif activation == "linear":
        pred = xyz
    else:
        raise ValueError(f"unknown DPT activation {activation!r}")
    conf_fns = {"expp1": lambda c: 1 + c.exp(), "expp0": torch.exp, "sigmoid": torch.sigmoid}
    if conf_activation not in conf_fns:
        raise ValueError(f"unknown DPT confidence activation {conf_activation!r}")
    return pred, conf_fns[conf_activation](conf)


class ResidualConvUnit(nn.Module):
    """relu(x) + conv2(relu(conv1(relu(x)))): the official unit's in-place ReLU feeds the skip."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, padding=1)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(x)
        return x + self.conv2(F.relu(self.conv1(x)))


class FeatureFusionBlock(nn.Module):
    """(x, skip?) -> resConfUnit2(x + resConfUnit1(skip)) -> bilinear resize -> out_conv.

    The resize comes before the 1x1 out_conv and uses align_corners=True (official order).
    """

    def __init__(self, features: int, has_residual: bool = True) -> None:
        super().__init__()
        self.out_conv = nn.Conv2d(features, features, 1)
        if has_residual:
            self.resConfUnit1 = ResidualConvUnit(features)
        self.resConfUnit2 = ResidualConvUnit(features)

    def forward(self, x: Tensor, skip: Tensor | None = None, size=None) -> Tensor:
        if skip is not None:
            x = x + self.resConfUnit1(skip)
        x = self.resConfUnit2(x)
        size = size if size is not None else (int(x.shape[-2] * 2), int(x.shape[-1] * 2))
        x = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=True)
        return self.out_conv(x)


class Scratch(nn.Module):
    """The DPT "scratch" module: per-level 3x3 convs, fusion blocks and output convolutions."""

    def __init__(self, out_channels: Sequence[int], features: int, output_dim: int) -> None:
        super().__init__()
        for i, ch in enumerate(out_channels, start=1):
            setattr(self, f"layer{i}_rn", nn.Conv2d(ch, features, 3, padding=1, bias=False))
        self.refinenet1 = FeatureFusionBlock(features)
        self.refinenet2 = FeatureFusionBlock(features)
        self.refinenet3 = FeatureFusionBlock(features)
        self.refinenet4 = FeatureFusionBlock(features, has_residual=False)
        self.output_conv1 = nn.Conv2d(features, features // 2, 3, padding=1)
        self.output_conv2 = nn.Sequential(
            nn.Conv2d(features // 2, PREDICTION_HIDDEN, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(PREDICTION_HIDDEN, output_dim, 1),
        )

    def fuse(self, levels: list[Tensor]) -> Tensor:
        """Pyramid [4x, 2x, 1x, 0.5x] -> fused map at 2x the finest level, features//2 channels."""
        l1, l2, l3, l4 = (getattr(self, f"layer{i}_rn")(x) for i, x in enumerate(levels, 1))
        out = self.refinenet4(l4, size=l3.shape[2:])
        out = self.refinenet3(out, l3, size=l2.shape[2:])
        out = self.refinenet2(out, l2, size=l1.shape[2:])
        out = self.refinenet1(out, l1)
        return self.output_conv1(out)


class DPTHead(nn.Module):
    """Aggregator tokens -> (prediction [B, S, H, W, output_dim-1], confidence [B, S, H, W])."""

    def __init__(
        self,
        dim_in: int = 2048,
        patch_size: int = 14,
        output_dim: int = 4,
        activation: str = "inv_log",
        conf_activation: str = "expp1",
        features: int = 256,
        out_channels: Sequence[int] = (256, 512, 1024, 1024),
        intermediate_layer_idx: Sequence[int] = (4, 11, 17, 23),
        pos_embed: bool = True,
        down_ratio: int = 1,
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.activation, self.conf_activation = activation, conf_activation
        self.intermediate_layer_idx = tuple(intermediate_layer_idx)
        self.pos_embed, self.down_ratio = pos_embed, down_ratio
        oc = list(out_channels)
        self.norm = nn.LayerNorm(dim_in)
        self.projects = nn.ModuleList(nn.Conv2d(dim_in, ch, 1) for ch in oc)
        self.resize_layers = nn.ModuleList(
            [
                nn.ConvTranspose2d(oc[0], oc[0], kernel_size=4, stride=4),
                nn.ConvTranspose2d(oc[1], oc[1], kernel_size=2, stride=2),
                nn.Identity(),
                nn.Conv2d(oc[3], oc[3], kernel_size=3, stride=2, padding=1),
            ]
        )
        self.scratch = Scratch(oc, features, output_dim)

    def forward(
        self,
        tokens: Sequence[Tensor] | Mapping[int, Tensor],
        image_hw: tuple[int, int],
        patch_start_idx: int,
        frames_chunk_size: int | None = 8,
    ) -> tuple[Tensor, Tensor]:
        """tokens[i]: aggregator output of layer i, [B, S, P, 2C]; image_hw: input (H, W).

        Frames are processed `frames_chunk_size` at a time to bound memory (same result).
        """
        S = tokens[self.intermediate_layer_idx[0]].shape[1]
        chunk = S if frames_chunk_size is None else frames_chunk_size
        if chunk >= S:
            return self._forward_frames(tokens, image_hw, patch_start_idx, 0, S)
        parts = [
            self._forward_frames(tokens, image_hw, patch_start_idx, s, min(s + chunk, S))
            for s in range(0, S, chunk)
        ]
        return torch.cat([p[0] for p in parts], dim=1), torch.cat([p[1] for p in parts], dim=1)

    def _forward_frames(
        self, tokens, image_hw: tuple[int, int], patch_start_idx: int, s0: int, s1: int
    ) -> tuple[Tensor, Tensor]:
        """Frames s0..s1-1 -> (prediction [B, s1-s0, H, W, D-1], confidence [B, s1-s0, H, W])."""
        H, W = image_hw
        ph, pw = H // self.patch_size, W // self.patch_size
        levels = []
        for k, layer in enumerate(self.intermediate_layer_idx):
            x = tokens[layer][:, s0:s1, patch_start_idx:]
            B, S = x.shape[:2]
            x = self.norm(x.reshape(B * S, -1, x.shape[-1]))
            x = x.permute(0, 2, 1).reshape(B * S, x.shape[-1], ph, pw)
            x = self.projects[k](x)
            if self.pos_embed:
                x = add_pos_embed(x, W, H)
            levels.append(self.resize_layers[k](x))
        out = self.scratch.fuse(levels)
        size = (
            int(ph * self.patch_size / self.down_ratio),
            int(pw * self.patch_size / self.down_ratio),
        )
        out = F.interpolate(out, size=size, mode="bilinear", align_corners=True)
        if self.pos_embed:
            out = add_pos_embed(out, W, H)
        pred, conf = activate_dense(
            self.scratch.output_conv2(out), self.activation, self.conf_activation
        )
        return pred.reshape(B, S, *pred.shape[1:]), conf.reshape(B, S, *conf.shape[1:])
