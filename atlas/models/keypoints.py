"""Pixel keypoints: where things are in each frame, at pixel precision, as explicit numbers.

VGGT describes a frame by its patch tokens: 14 x 14 pixels each, so at the 56 px of the CPU
recipes a frame is a 4 x 4 grid whose cells span a quarter of the scene. That is enough to tell
what is in the scene, not where an object is to the centimetre a grasp needs; a pretrained
VGGT-1B encodes sub-patch positions in its features, a randomly initialised tiny one does not
(measured in docs/BENCHMARKS.md). This branch is the standard visuomotor answer (Levine et al.
2016, "End-to-End Training of Deep Visuomotor Policies"; robomimic's and Diffusion Policy's
spatial softmax): a small trainable CNN whose K feature maps each become the expected (x, y) of
their activation (a spatial softmax), i.e. K learned keypoints in image coordinates.

    frames [B, S, 3, H, W] in [0, 1] -> CNN (stride 4) -> K maps -> (standardize) -> spatial
        softmax -> keypoints [B, S, 2K] in [-1, 1]
    keypoints -> MLP -> one geometry token per frame [B, S, 1, dim]      (`token`)
    keypoints of all frames -> the action head, beside the proprio      (action_head.use_keypoints)

Standardized maps: a freshly initialised CNN's maps vary by about 0.01 across the image, so a
softmax over them is uniform, every keypoint sits at the centre and its gradient is tiny; each
map scaled to zero mean and unit variance over its pixels starts with peaks the softmax can see.
The direct path to the action head: through the fusion, a keypoint token is one attention value
among the language and patch tokens, and the policy learned to ignore it and aim where the task
usually is; beside the proprio, like robomimic's low-dimensional observations, the head reads the
block's position as it reads the arm's. Both measured in docs/BENCHMARKS.md.

Switched on by `model.geometry.keypoints: K` (0: off). It reads the pixels the policy is given,
so it needs the images in every batch (not a VGGT feature cache; checked in the config).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class SpatialSoftmax(nn.Module):
    """Feature maps [N, K, h, w] -> expected (x, y) of each map under its softmax, [N, 2K].

    A learned temperature (log scale, one for all maps) lets the maps sharpen into points.
    `standardize` first scales each map to zero mean and unit variance over its pixels (module
    doc). Coordinates are in [-1, 1], x to the right and y downwards in the given image.
    """

    def __init__(self, standardize: bool = True) -> None:
        super().__init__()
        self.standardize = standardize
        # Shape [1], not a scalar: FSDP2's fully_shard refuses 0-d parameters.
        self.log_temperature = nn.Parameter(torch.zeros(1))

    def forward(self, maps: Tensor) -> Tensor:
        n, k, h, w = maps.shape
        flat = maps.flatten(2)
        if self.standardize:
            flat = (flat - flat.mean(-1, keepdim=True)) / (flat.std(-1, keepdim=True) + 1e-5)
        weights = (flat / self.log_temperature.exp()).softmax(-1).view(n, k, h, w)
        ys = torch.linspace(-1.0, 1.0, h, device=maps.device, dtype=maps.dtype)
        xs = torch.linspace(-1.0, 1.0, w, device=maps.device, dtype=maps.dtype)
        x = (weights.sum(2) * xs).sum(-1)  # marginal over rows, then the mean column
        y = (weights.sum(3) * ys).sum(-1)
        return torch.stack([x, y], dim=-1).flatten(1)


class KeypointEncoder(nn.Module):
    """frames [B, S, 3, H, W] in [0, 1] -> keypoints [B, S, 2K]; `token` embeds them."""

    def __init__(
        self, num_keypoints: int, dim: int, width: int = 32, standardize: bool = True
    ) -> None:
        super().__init__()
        self.cnn = nn.Sequential(
            nn.Conv2d(3, width, 5, stride=2, padding=2),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, stride=2, padding=1),
            nn.ReLU(),
            # Standardizing subtracts each map's mean, bias included: it could never learn.
            nn.Conv2d(width, num_keypoints, 3, padding=1, bias=not standardize),
        )
        self.softmax = SpatialSoftmax(standardize)
        self.embed = nn.Sequential(
            nn.Linear(2 * num_keypoints, dim), nn.GELU(), nn.Linear(dim, dim)
        )

    def forward(self, frames: Tensor) -> Tensor:
        """frames [B, S, 3, H, W] in [0, 1] -> (x, y) of every keypoint, [B, S, 2K]."""
        B, S = frames.shape[:2]
        weight = self.cnn[0].weight
        x = frames.flatten(0, 1).to(weight.dtype) - 0.5  # centred pixels
        return self.softmax(self.cnn(x)).view(B, S, -1)

    def token(self, points: Tensor) -> Tensor:
        """keypoints [B, S, 2K] -> one geometry token per frame [B, S, 1, dim]."""
        return self.embed(points).unsqueeze(2)


__all__ = ["KeypointEncoder", "SpatialSoftmax"]
