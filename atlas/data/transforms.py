"""Image transforms shared by the dataset and the policy's `predict_action`.

`preprocess_frames` (orientation + resize) is THE function that turns raw LIBERO frames into model
input, in training and in evaluation alike, so both see identical pixels. Augmentation is applied on
top of it, on the training split only, with parameters drawn from a generator seeded by
(seed, epoch, sample index): the same sample in the same epoch gets the same crop and colours
whichever worker loads it, and a resumed run replays them.

Everything stays uint8 until the last moment: resizing runs torch's uint8 bilinear kernel on a
channels-last view of the HWC frames (no copy, no float conversion), which is what makes loading
fast on a small CPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from atlas.config.schema import AugmentationConfig, DataConfig

# hflip is not a config value: it is what vflip becomes on frames stored rotated 180 degrees.
Orientation = Literal["none", "vflip", "rot180", "hflip"]
ORIENTATIONS: tuple[str, ...] = ("none", "vflip", "rot180", "hflip")
_GRAY = (0.299, 0.587, 0.114)  # ITU-R 601 luma weights


def orient_frames(frames: torch.Tensor, orientation: Orientation) -> torch.Tensor:
    """Undo LIBERO's upside-down storage. frames uint8 [S, h, w, 3] -> same shape.

    vflip gives the true camera image (what 3D geometry needs); rot180 is what OpenVLA, openpi and
    LeRobot use (upright but mirrored left-right); none keeps the stored rows.
    """
    if orientation == "none":
        return frames
    if orientation == "vflip":
        return frames.flip(1)
    if orientation == "rot180":
        return frames.flip(1, 2)
    if orientation == "hflip":
        return frames.flip(2)
    raise ValueError(f"orientation must be one of {ORIENTATIONS}, got {orientation!r}")


def stored_orientation(data: DataConfig) -> Literal["none", "rot180"]:
    """How `data`'s stored frames relate to the simulator's raw ones (resolves "auto")."""
    if data.stored_orientation != "auto":
        return data.stored_orientation
    return "rot180" if data.format == "lerobot" else "none"


def frame_orientation(data: DataConfig) -> Orientation:
    """The transform of STORED frames that gives `data.orientation` of the simulator's frames.

    data.orientation is defined on the simulator's raw frames (what the rollout applies); frames
    stored rotated 180 degrees need that rotation undone first: vflip . rot180 = hflip.
    """
    if stored_orientation(data) == "none":
        return data.orientation
    return {"none": "rot180", "vflip": "hflip", "rot180": "none"}[data.orientation]  # type: ignore[return-value]


def resize_uint8(images: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear (antialiased when shrinking) resize of uint8 [N, 3, h, w] to [N, 3, size, size]."""
    if images.shape[-2:] == (size, size):
        return images
    # torch's uint8 kernel is fastest on channels-last input, which an HWC view already is.
    images = images.contiguous(memory_format=torch.channels_last)
    # Antialiasing only matters when shrinking; enlarging gives identical pixels ~25% faster
    # without it (128 px LIBERO frames -> 224 px).
    shrink = size < images.shape[-2] or size < images.shape[-1]
    return F.interpolate(images, size=(size, size), mode="bilinear", antialias=shrink)


def preprocess_frames(
    frames: np.ndarray | torch.Tensor, image_size: int, orientation: Orientation = "vflip"
) -> torch.Tensor:
    """Raw frames as stored in the HDF5 files -> model input.

    frames: uint8 [S, h, w, 3] or [h, w, 3] (HDF5 / simulator orientation).
    Returns uint8 [S, 3, image_size, image_size], contiguous, orientation applied.
    """
    if isinstance(frames, np.ndarray):
        frames = np.ascontiguousarray(frames)  # torch refuses negative strides (img[::-1])
    t = torch.as_tensor(frames)
    if t.dtype != torch.uint8:
        raise TypeError(f"frames must be uint8, got {t.dtype}")
    if t.ndim == 3:
        t = t.unsqueeze(0)
    if t.ndim != 4 or t.shape[-1] != 3:
        raise ValueError(f"frames must be [S, h, w, 3] or [h, w, 3], got {tuple(t.shape)}")
    return orient_and_resize(t, image_size, orientation).contiguous()


def orient_and_resize(
    frames: torch.Tensor, image_size: int, orientation: Orientation
) -> torch.Tensor:
    """`preprocess_frames` minus the final copy: uint8 [S, h, w, 3] -> [S, 3, H, W].

    The result may have channels-last strides. The dataset uses this because collation copies the
    batch into contiguous memory anyway: one fewer pass over the pixels.
    """
    t = orient_frames(frames, orientation).permute(0, 3, 1, 2)  # channels-last strides
    return resize_uint8(t, image_size)


# -------------------------------------------------------------------------------- augmentation


@dataclass(frozen=True)
class AugmentParams:
    """One draw of augmentation parameters (applied to every history frame of one camera)."""

    crop: tuple[int, int, int]  # top, left, side of a square crop at the output size
    shift: tuple[int, int]  # dy, dx in output pixels
    brightness: float  # multiplicative factors; 1.0 = unchanged
    contrast: float
    saturation: float
    hue: float  # hue rotation as a fraction of a turn; 0.0 = unchanged


def augment_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator for one sample: a pure function of (seed, epoch, index), not of the worker."""
    return np.random.default_rng([int(seed), int(epoch), int(index)])


def sample_augment_params(
    rng: np.random.Generator, cfg: AugmentationConfig, size: int
) -> AugmentParams:
    """Draw crop, shift and colour-jitter parameters for a square image of side `size`."""
    side = size
    if cfg.crop_scale < 1.0:
        area = rng.uniform(cfg.crop_scale, 1.0)
        side = max(1, min(size, round(math.sqrt(area) * size)))
    top, left = (int(v) for v in rng.integers(0, size - side + 1, size=2))
    s = cfg.shift_pixels
    dy, dx = (int(v) for v in rng.integers(-s, s + 1, size=2)) if s > 0 else (0, 0)

    def factor(strength: float) -> float:
        return float(rng.uniform(1 - strength, 1 + strength)) if strength > 0 else 1.0

    hue = float(rng.uniform(-cfg.hue, cfg.hue)) if cfg.hue > 0 else 0.0
    return AugmentParams(
        crop=(top, left, side),
        shift=(dy, dx),
        brightness=factor(cfg.brightness),
        contrast=factor(cfg.contrast),
        saturation=factor(cfg.saturation),
        hue=hue,
    )


def apply_augmentation(images: torch.Tensor, p: AugmentParams) -> torch.Tensor:
    """Random resized crop, shift and colour jitter. uint8 [F, 3, H, W] -> uint8 [F, 3, H, W]."""
    size = images.shape[-1]
    top, left, side = p.crop
    if side != size:
        images = resize_uint8(images[..., top : top + side, left : left + side], size)
    if p.shift != (0, 0):
        # Shift with edge replication: gather clamped row / column indices (works on uint8).
        rows = (torch.arange(images.shape[-2]) - p.shift[0]).clamp(0, images.shape[-2] - 1)
        cols = (torch.arange(size) - p.shift[1]).clamp(0, size - 1)
        images = images.index_select(-2, rows).index_select(-1, cols)
    if (p.brightness, p.contrast, p.saturation, p.hue) != (1.0, 1.0, 1.0, 0.0):
        images = _colour_jitter(images.float(), p).round().clamp(0, 255).to(torch.uint8)
    return images.contiguous()


def _gray(x: torch.Tensor) -> torch.Tensor:
    """Luma of float [F, 3, H, W] -> [F, 1, H, W]."""
    return (x * x.new_tensor(_GRAY).view(1, 3, 1, 1)).sum(1, keepdim=True)


def _colour_jitter(x: torch.Tensor, p: AugmentParams) -> torch.Tensor:
    """Brightness, contrast, saturation, hue (fixed order) on float [F, 3, H, W] in [0, 255]."""
    x = x * p.brightness
    mean = _gray(x).mean(dim=(-2, -1), keepdim=True)
    x = (x - mean) * p.contrast + mean
    gray = _gray(x)
    x = (x - gray) * p.saturation + gray
    if p.hue != 0.0:
        x = _rotate_hue(x, p.hue)
    return x


def _rotate_hue(x: torch.Tensor, turns: float) -> torch.Tensor:
    """Rotate the chroma plane of YIQ space by `turns` of a full circle (a cheap hue shift)."""
    to_yiq = x.new_tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    c, s = math.cos(2 * math.pi * turns), math.sin(2 * math.pi * turns)
    rot = x.new_tensor([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])
    matrix = torch.linalg.inv(to_yiq) @ rot @ to_yiq
    return (matrix @ x.flatten(2)).view(x.shape)  # [3, 3] @ [F, 3, H*W]
