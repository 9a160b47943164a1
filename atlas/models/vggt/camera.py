"""Camera utilities for VGGT's "absT_quaR_FoV" pose encoding, batched in torch.

Conventions (official VGGT): the extrinsic is camera-from-world [R | t] in OpenCV axes (x right,
y down, z forward); quaternions are scalar-last (x, y, z, w); the encoding is
[tx, ty, tz, qx, qy, qz, qw, fov_h, fov_w] with FoVs in radians, fov_h vertical. The world frame
of VGGT predictions is the first camera. All functions accept any leading batch dimensions.
"""

from __future__ import annotations

import torch
from torch import Tensor


def quat_to_mat(quat: Tensor) -> Tensor:
    """Quaternions [..., 4] (x, y, z, w; need not be unit) -> rotation matrices [..., 3, 3]."""
    i, j, k, r = quat.unbind(-1)
    two_s = 2.0 / (quat * quat).sum(-1)  # normalises a non-unit quaternion
    m = torch.stack(
        (
            1 - two_s * (j * j + k * k),
            two_s * (i * j - k * r),
            two_s * (i * k + j * r),
            two_s * (i * j + k * r),
            1 - two_s * (i * i + k * k),
            two_s * (j * k - i * r),
            two_s * (i * k - j * r),
            two_s * (j * k + i * r),
            1 - two_s * (i * i + j * j),
        ),
        dim=-1,
    )
    return m.reshape(*quat.shape[:-1], 3, 3)


def _sqrt_positive_part(x: Tensor) -> Tensor:
    """sqrt(max(0, x)) with a zero (not infinite) gradient where x <= 0."""
    positive = x > 0
    return torch.where(positive, torch.sqrt(torch.where(positive, x, torch.ones_like(x))), 0.0)


def mat_to_quat(matrix: Tensor) -> Tensor:
    """Rotation matrices [..., 3, 3] -> quaternions [..., 4] (x, y, z, w) with w >= 0.

    PyTorch3D's numerically stable algorithm: of four candidate quaternions, take the one built
    from the largest |component|.
    """
    m00, m01, m02, m10, m11, m12, m20, m21, m22 = matrix.flatten(-2).unbind(-1)
    q_abs = _sqrt_positive_part(
        torch.stack(
            (
                1.0 + m00 + m11 + m22,
                1.0 + m00 - m11 - m22,
                1.0 - m00 + m11 - m22,
                1.0 - m00 - m11 + m22,
            ),
            dim=-1,
        )
    )
    # Row c is the candidate (w, x, y, z) scaled by 4 * |component c|.
    candidates = torch.stack(
        (
            torch.stack((q_abs[..., 0] ** 2, m21 - m12, m02 - m20, m10 - m01), dim=-1),
            torch.stack((m21 - m12, q_abs[..., 1] ** 2, m10 + m01, m02 + m20), dim=-1),
            torch.stack((m02 - m20, m10 + m01, q_abs[..., 2] ** 2, m12 + m21), dim=-1),
            torch.stack((m10 - m01, m20 + m02, m21 + m12, q_abs[..., 3] ** 2), dim=-1),
        ),
        dim=-2,
    )
    floor = torch.tensor(0.1, dtype=q_abs.dtype, device=q_abs.device)
    candidates = candidates / (2.0 * q_abs[..., None].maximum(floor))
    best = q_abs.argmax(dim=-1)[..., None, None].expand(*q_abs.shape[:-1], 1, 4)
    wxyz = candidates.gather(-2, best).squeeze(-2)
    xyzw = wxyz[..., [1, 2, 3, 0]]
    return torch.where(xyzw[..., 3:4] < 0, -xyzw, xyzw)


def pose_encoding_to_extri_intri(
    pose_enc: Tensor, image_size_hw: tuple[int, int] | None = None
) -> tuple[Tensor, Tensor | None]:
    """Pose encoding [..., 9] -> (extrinsic [..., 3, 4], intrinsic [..., 3, 3] or None).

    The intrinsic (principal point at the image centre, zero skew) needs image_size_hw = (H, W),
    the size of the images the encoding was predicted for.
    """
    trans, quat = pose_enc[..., :3], pose_enc[..., 3:7]
    extrinsic = torch.cat((quat_to_mat(quat), trans[..., None]), dim=-1)
    if image_size_hw is None:
        return extrinsic, None
    H, W = (float(v) for v in image_size_hw)
    fy = (H / 2.0) / torch.tan(pose_enc[..., 7] / 2.0)
    fx = (W / 2.0) / torch.tan(pose_enc[..., 8] / 2.0)
    intrinsic = pose_enc.new_zeros(*pose_enc.shape[:-1], 3, 3)
    intrinsic[..., 0, 0] = fx
    intrinsic[..., 1, 1] = fy
    intrinsic[..., 0, 2] = W / 2
    intrinsic[..., 1, 2] = H / 2
    intrinsic[..., 2, 2] = 1.0
    return extrinsic, intrinsic


def extri_intri_to_pose_encoding(
    extrinsic: Tensor, intrinsic: Tensor, image_size_hw: tuple[int, int]
) -> Tensor:
    """(extrinsic [..., 3, 4], intrinsic [..., 3, 3], (H, W)) -> float32 pose encoding [..., 9]."""
    quat = mat_to_quat(extrinsic[..., :3, :3])
    trans = extrinsic[..., :3, 3]
    H, W = (float(v) for v in image_size_hw)
    fov_h = 2 * torch.atan((H / 2) / intrinsic[..., 1, 1])
    fov_w = 2 * torch.atan((W / 2) / intrinsic[..., 0, 0])
    return torch.cat((trans, quat, fov_h[..., None], fov_w[..., None]), dim=-1).float()


def invert_extrinsic(extrinsic: Tensor) -> Tensor:
    """Closed-form SE(3) inverse: camera-from-world [..., 3, 4] -> world-from-camera [..., 3, 4]."""
    rot_t = extrinsic[..., :3, :3].transpose(-1, -2)
    trans = -(rot_t @ extrinsic[..., :3, 3:])
    return torch.cat((rot_t, trans), dim=-1)


def unproject_depth_to_world_points(depth: Tensor, extrinsic: Tensor, intrinsic: Tensor) -> Tensor:
    """Depth maps -> world points, per pixel (u = column, v = row; no +0.5 offset).

    depth: [..., H, W] or [..., H, W, 1]; extrinsic [..., 3, 4] (camera-from-world);
    intrinsic [..., 3, 3]. Returns [..., H, W, 3] in the world frame of the extrinsics.
    """
    if depth.shape[-1] == 1 and depth.dim() == extrinsic.dim() + 1:
        depth = depth[..., 0]
    H, W = depth.shape[-2:]
    fx, fy = intrinsic[..., 0, 0, None, None], intrinsic[..., 1, 1, None, None]
    cx, cy = intrinsic[..., 0, 2, None, None], intrinsic[..., 1, 2, None, None]
    v, u = torch.meshgrid(
        torch.arange(H, dtype=depth.dtype, device=depth.device),
        torch.arange(W, dtype=depth.dtype, device=depth.device),
        indexing="ij",
    )
    cam = torch.stack(((u - cx) * depth / fx, (v - cy) * depth / fy, depth), dim=-1)
    world_from_cam = invert_extrinsic(extrinsic)
    rot = world_from_cam[..., None, None, :3, :3]  # broadcast over H, W
    trans = world_from_cam[..., None, None, :3, 3]
    return (rot @ cam[..., None])[..., 0] + trans
