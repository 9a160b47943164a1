"""The VGGT model: aggregator plus camera, depth and world-point heads; and its factory.

Precision policy (as the official model): the aggregator may run under bf16 autocast (its
residual stream stays fp32 because LayerScale gammas are fp32); the heads always run with
autocast disabled, i.e. in the dtype of the aggregator output (fp32 with fp32 weights).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from atlas.config.vggt import VGGTConfig, get_vggt_preset
from atlas.models.vggt.aggregator import Aggregator
from atlas.models.vggt.camera_head import CameraHead
from atlas.models.vggt.dpt_head import DPTHead


class VGGT(nn.Module):
    """Visual Geometry Grounded Transformer (without the track head).

    Child names and order (aggregator, camera_head, point_head, depth_head) match the official
    checkpoint, so its state dict (minus `track_head.*`) loads strictly.
    """

    def __init__(self, config: VGGTConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        dim = 2 * c.embed_dim
        self.aggregator = Aggregator(c)
        self.camera_head = (
            CameraHead(
                dim,
                trunk_depth=c.camera_trunk_depth,
                num_heads=c.camera_num_heads,
                mlp_ratio=c.camera_mlp_ratio,
                init_values=c.camera_init_values,
                trans_act=c.camera_trans_act,
                quat_act=c.camera_quat_act,
                fl_act=c.camera_fl_act,
            )
            if c.enable_camera
            else None
        )
        self.point_head = (
            self._dpt(c, 4, c.point_activation, c.point_conf_activation) if c.enable_point else None
        )
        self.depth_head = (
            self._dpt(c, 2, c.depth_activation, c.depth_conf_activation) if c.enable_depth else None
        )

    @staticmethod
    def _dpt(c: VGGTConfig, output_dim: int, activation: str, conf_activation: str) -> DPTHead:
        return DPTHead(
            2 * c.embed_dim,
            patch_size=c.patch_size,
            output_dim=output_dim,
            activation=activation,
            conf_activation=conf_activation,
            features=c.dpt_features,
            out_channels=c.dpt_out_channels,
            intermediate_layer_idx=[i % c.depth for i in c.dpt_layers],
            pos_embed=c.dpt_pos_embed,
            down_ratio=c.dpt_down_ratio,
        )

    def head_layers(self) -> list[int]:
        """Aggregator outputs the enabled heads read (sorted, non-negative)."""
        needed: set[int] = set()
        if self.camera_head is not None:
            needed.add(self.config.depth - 1)
        for head in (self.depth_head, self.point_head):
            if head is not None:
                needed.update(head.intermediate_layer_idx)
        return sorted(needed)

    def forward(self, images: Tensor, return_layers: Sequence[int] | None = None) -> dict[str, Any]:
        """Predict cameras, depth and world points for each sequence of frames.

        images: [B, S, 3, H, W] (or [S, 3, H, W]) in [0, 1], H and W multiples of 14.
        return_layers: aggregator outputs to also return under "tokens" (a list of
        [B, S, P, 2C] in the given order), with "patch_start_idx"; computed in the same pass.

        Returns a dict with, for the enabled heads: "pose_enc" [B, S, 9], "pose_enc_list"
        (num_iterations x [B, S, 9]), "depth" [B, S, H, W, 1], "depth_conf" [B, S, H, W],
        "world_points" [B, S, H, W, 3], "world_points_conf" [B, S, H, W]; in eval mode also
        "images" (the [B, S, 3, H, W] input).
        """
        if images.dim() == 4:
            images = images.unsqueeze(0)
        extra = [] if return_layers is None else self.aggregator.resolve_layers(return_layers)
        needed = sorted(set(self.head_layers()) | set(extra))
        preds: dict[str, Any] = {}
        tokens: dict[int, Tensor] = {}
        patch_start_idx = self.aggregator.patch_start_idx
        if needed:  # only the layers someone reads are kept (and the run stops at the deepest)
            outs, patch_start_idx = self.aggregator(images, layers=needed)
            tokens = dict(zip(needed, outs))
        preds.update(self.run_heads(tokens, images.shape[-2:], patch_start_idx))
        if return_layers is not None:
            preds["tokens"] = [tokens[i] for i in extra]
            preds["patch_start_idx"] = patch_start_idx
        if not self.training:
            preds["images"] = images
        return preds

    def run_heads(
        self, tokens: dict[int, Tensor], image_hw: Sequence[int], patch_start_idx: int
    ) -> dict[str, Any]:
        """Run the enabled heads on aggregator outputs {layer: [B, S, P, 2C]} (see forward).

        Autocast is disabled here, so the heads compute in the tokens' dtype (fp32).
        """
        if not tokens:
            return {}
        device_type = next(iter(tokens.values())).device.type
        with torch.autocast(device_type=device_type, enabled=False):
            return self._heads(tokens, (int(image_hw[0]), int(image_hw[1])), patch_start_idx)

    def _heads(
        self, tokens: dict[int, Tensor], hw: tuple[int, int], patch_start_idx: int
    ) -> dict[str, Any]:
        c = self.config
        preds: dict[str, Any] = {}
        if self.camera_head is not None:
            pose_enc_list = self.camera_head(tokens[c.depth - 1], c.camera_num_iterations)
            preds["pose_enc"] = pose_enc_list[-1]
            preds["pose_enc_list"] = pose_enc_list
        if self.depth_head is not None:
            depth, conf = self.depth_head(tokens, hw, patch_start_idx, c.dpt_frames_chunk_size)
            preds["depth"], preds["depth_conf"] = depth, conf
        if self.point_head is not None:
            points, conf = self.point_head(tokens, hw, patch_start_idx, c.dpt_frames_chunk_size)
            preds["world_points"], preds["world_points_conf"] = points, conf
        return preds


def build_vggt(config: VGGTConfig | str, device: torch.device | str | None = None) -> VGGT:
    """Build VGGT from a config or a preset name (a key of VGGT_PRESETS), randomly initialised.

    device="meta" allocates nothing: use it with `load_vggt_weights` (assign=True) to load a
    checkpoint without holding two copies of the weights.
    """
    if isinstance(config, str):
        config = get_vggt_preset(config)
    if device is None:
        return VGGT(config)
    with torch.device(device):
        return VGGT(config)
