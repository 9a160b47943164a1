"""AtlasVLAPolicy: the contract the trainer, the evaluator and the exporter depend on.

    images [B, S, 3, H, W] uint8 --/255--> VGGT aggregator (frozen: no grad) --> GeometryEncoder
    instruction list[str] ------> LanguageEncoder (frozen: cached per instruction)      |
                                              \\-----------> FusionTransformer <--------/
    proprio [B, 8] (optional) --------------------------------> ActionHead --> [B, Hc, 7]

The policy is built from its own `PolicyConfig` (atlas.models.config): the model sections and the
data facts it needs, nothing of the run that trains it. Modules are named by
`atlas.config.schema.POLICY_MODULES` (vggt, language_encoder, geometry, fusion, action_head).
Freezing is declared in the config (`vggt.freeze`, `language_encoder.freeze`): a frozen module has
no trainable parameters, stays in eval mode through `policy.train()` and runs without autograd.
Parts of VGGT that the configured geometry never reads (unused heads, aggregator layers past the
deepest one read) are frozen too, even when VGGT is trained, because they would get no gradient
(and DDP would complain).

This file is single-device PyTorch (no process groups, no wrappers). Saving and loading live in
`atlas.models.pretrained`; parameter groups and counts in `atlas.models.parameters`.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from atlas.data.normalization import Normalizer
from atlas.data.transforms import preprocess_frames
from atlas.models import parameters, pretrained
from atlas.models.action_head import ActionHead
from atlas.models.config import PolicyConfig
from atlas.models.detached import DetachedLanguageEncoder, DetachedVGGT
from atlas.models.fusion import FusionTransformer
from atlas.models.geometry import (
    GeometryEncoder,
    backbone_inputs,
    extract_vggt_features,
    vggt_parts,
)
from atlas.models.language import LanguageEncoder, LanguageFeatures, language_hidden_size
from atlas.models.loss import VLALoss, gripper_prediction
from atlas.models.vggt import VGGT, build_vggt, get_vggt_preset, load_vggt_weights

log = logging.getLogger(__name__)


class AtlasVLAPolicy(nn.Module):
    """VGGT + language encoder + geometry + fusion + action head, with the VLALoss.

    Use `build_policy(config, normalizer)`; `.config` is the PolicyConfig it was built from and
    `.normalizer` the action/proprio normalizer the data was normalized with.
    """

    def __init__(
        self,
        config: PolicyConfig,
        vggt: VGGT | DetachedVGGT,
        language_encoder: LanguageEncoder | DetachedLanguageEncoder,
        normalizer: Normalizer | None = None,
    ) -> None:
        super().__init__()
        c = config
        self.config = config
        self.normalizer = normalizer
        self.vggt = vggt
        self.language_encoder = language_encoder
        self.geometry = GeometryEncoder(
            c.geometry,
            vggt_dim=2 * vggt.config.embed_dim,
            num_layers=len(c.vggt.layers),
            dim=c.fusion.dim,
            num_cameras=len(c.cameras),
            history=c.history,
            num_special=vggt.config.patch_start_idx,
        )
        self.fusion = FusionTransformer(
            c.fusion, language_encoder.hidden_size, c.action_head.chunk_size
        )
        keypoint_dim = c.num_frames * 2 * c.geometry.keypoints if c.action_head.use_keypoints else 0
        self.action_head = ActionHead(c.action_head, c.fusion.dim, keypoint_dim)
        self.loss_fn = VLALoss(c.loss)
        self._history: deque[Tensor] = deque(maxlen=c.history)  # predict_action frames
        self._apply_freezing()

    # -- freezing -------------------------------------------------------------------------

    def frozen_modules(self) -> list[str]:
        """Names (of POLICY_MODULES) frozen by the config."""
        c = self.config
        flags = {"vggt": c.vggt.freeze, "language_encoder": c.language_encoder.freeze}
        return [name for name, frozen in flags.items() if frozen]

    def _apply_freezing(self) -> None:
        for name in self.frozen_modules():
            parameters.set_frozen(getattr(self, name))
        if isinstance(self.vggt, DetachedVGGT):
            return  # no backbone parameters here at all
        needed, heads = vggt_parts(self.vggt, self.config.vggt.layers, self.config.geometry)
        unused = [f"{h}." for h in ("camera_head", "depth_head", "point_head") if h not in heads]
        unused += [
            f"aggregator.{kind}.{i}."
            for kind in ("frame_blocks", "global_blocks")
            for i in range(max(needed) + 1, self.vggt.aggregator.depth)
        ]
        n = parameters.freeze_prefixes(self.vggt, unused)
        if n and not self.config.vggt.freeze:
            log.info("VGGT: %d parameters the geometry never reads are frozen", n)
        # BERT-style models compute a pooler output we never read (we pool ourselves).
        pooler = getattr(self.language_encoder.model, "pooler", None)
        if isinstance(pooler, nn.Module):
            pooler.requires_grad_(False)

    def train(self, mode: bool = True) -> AtlasVLAPolicy:
        """Like nn.Module.train, but frozen modules stay in eval mode."""
        super().train(mode)
        for name in self.frozen_modules():
            getattr(self, name).eval()
        return self

    # -- the contract ---------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return self.action_head.mlp[-1].weight.device

    def forward(self, batch: dict[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
        """Batch (see docs/ARCHITECTURE.md) -> (loss, {"loss", "loss_pose", "loss_gripper"})."""
        return self._loss(self._raw_actions(batch), batch)

    def predict_chunk(self, batch: dict[str, Any]) -> Tensor:
        """Batch (images, instruction, optional proprio) -> NORMALIZED actions [B, Hc, 7]."""
        return self._prediction(self._raw_actions(batch))

    def evaluate_batch(self, batch: dict[str, Any]) -> tuple[Tensor, dict[str, Tensor], Tensor]:
        """(loss, metrics, NORMALIZED prediction [B, Hc, 7]) from one pass (validation)."""
        raw = self._raw_actions(batch)
        loss, metrics = self._loss(raw, batch)
        return loss, metrics, self._prediction(raw)

    def _loss(self, raw: Tensor, batch: dict[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
        mask = batch.get("action_mask")
        mask = None if mask is None else mask.to(raw.device, non_blocking=True)
        return self.loss_fn(raw, batch["actions"].to(raw.device, non_blocking=True), mask)

    def _prediction(self, raw: Tensor) -> Tensor:
        gripper = gripper_prediction(raw[..., 6:], self.config.loss.gripper_loss)
        return torch.cat([raw[..., :6], gripper], dim=-1)

    def backbone_features(self, images: Tensor) -> dict[str, Tensor]:
        """images uint8 [B, S, 3, H, W] -> the parameter-free VGGT features the geometry reads.

        {"tokens": [B, S, T0, L*2C], and "pose_enc" [B, S, 9] / "points" [B, S, H/2, W/2, 3] when
        enabled} (atlas.models.geometry.backbone_inputs). With a frozen VGGT this is a pure
        function of the images: a feature cache stores it and puts it in the batch under
        "vggt_<key>", and the policy then skips VGGT.
        """
        return self._vggt_inputs(self._unit_pixels(images))

    def _unit_pixels(self, images: Tensor) -> Tensor:
        """uint8 frames -> float [0, 1] on the policy's device."""
        # uint8 crosses to the device (4x fewer bytes than float), then becomes [0, 1] there.
        return images.to(self.device, non_blocking=True).float() / 255.0

    def _vggt_inputs(self, pixels: Tensor) -> dict[str, Tensor]:
        c = self.config
        if isinstance(self.vggt, DetachedVGGT):
            self.vggt()  # raises: the batch should have carried these features
        with torch.set_grad_enabled(torch.is_grad_enabled() and not c.vggt.freeze):
            feats = extract_vggt_features(self.vggt, pixels, c.vggt.layers, c.geometry)
            return backbone_inputs(feats, c.geometry)

    def _raw_actions(self, batch: dict[str, Any]) -> Tensor:
        """Head outputs [B, Hc, 7] (the gripper channel is a logit under the BCE loss)."""
        device, c = self.device, self.config
        cached = {
            k[5:]: v.to(device, non_blocking=True)
            for k, v in batch.items()
            if k.startswith("vggt_")
        }
        if cached and not c.vggt.freeze:
            raise ValueError("cached VGGT features (vggt_* batch keys) need model.vggt.freeze")
        if cached:  # never with keypoints (the config refuses the pair)
            inputs = cached
        else:
            pixels = self._unit_pixels(batch["images"])
            inputs = self._vggt_inputs(pixels)
            if self.geometry.keypoints is not None:  # it reads the same [0, 1] frames
                inputs = {**inputs, "keypoints": self.geometry.keypoints(pixels)}
        geometry = self.geometry(inputs)
        language = self._language(batch, device)
        queries = self.fusion(geometry, language)
        proprio = batch.get("proprio") if c.action_head.use_proprio else None
        proprio = None if proprio is None else proprio.to(device, non_blocking=True)
        keypoints = inputs["keypoints"] if c.action_head.use_keypoints else None
        return self.action_head(queries, proprio, keypoints)

    def _language(self, batch: dict[str, Any], device: torch.device) -> LanguageFeatures:
        """Precomputed "language_pooled/tokens/mask" from the batch (feature cache), else encode.

        Cached tokens are padded to the longest cached instruction; trimming to this batch's
        longest gives exactly the shapes the live encoder returns.
        """
        if "language_pooled" not in batch:
            return self.language_encoder(batch["instruction"], device)
        mask = batch["language_mask"]
        length = int(mask.sum(dim=1).max())  # on the loader's CPU tensor: no device sync
        return LanguageFeatures(
            batch["language_pooled"].to(device, non_blocking=True),
            batch["language_tokens"][:, :length].to(device, non_blocking=True),
            mask[:, :length].to(device, non_blocking=True),
        )

    def reset(self) -> None:
        """Forget the frame history of predict_action (call between episodes)."""
        self._history.clear()

    def new_history(self) -> deque[Tensor]:
        """An empty frame history for `predict_action(..., history=)` (a server keeps one per
        client, so clients never see each other's frames)."""
        return deque(maxlen=self.config.history)

    @torch.no_grad()
    def predict_action(
        self, observation: dict[str, Any], history: deque[Tensor] | None = None
    ) -> np.ndarray:
        """One robot observation -> the action chunk [Hc, 7] in robot units (unnormalized).

        observation = {"images": {camera: uint8 [h, w, 3] as stored in LIBERO HDF5 / returned by
        the simulator}, "instruction": str, "state": float32 [8] (read with use_proprio)}.
        Orientation, resizing and normalization go through the same functions as the dataset.
        Frames of the previous calls since `reset()` fill the history; at an episode start the
        oldest frame is repeated. Runs in eval mode (restored afterwards). `history` (from
        `new_history()`) replaces the policy's own frame history for this call.
        """
        if self.normalizer is None:
            raise RuntimeError(
                "predict_action needs a normalizer: build_policy(config, normalizer)"
            )
        c = self.config
        frames = [
            preprocess_frames(np.asarray(observation["images"][cam]), c.image_size, c.orientation)
            for cam in c.cameras
        ]
        current = torch.cat(frames)  # [cams, 3, H, W], the current step
        # The data.blank_images ablation sees black frames here as in training.
        history = self._history if history is None else history
        history.append(torch.zeros_like(current) if c.blank_images else current)
        steps = list(history)[::-1]  # h = 0 is the current step
        steps += [steps[-1]] * (c.history - len(steps))
        images = torch.cat(steps).unsqueeze(0)  # [1, history * cams, 3, H, W]
        batch: dict[str, Any] = {"images": images, "instruction": [observation["instruction"]]}
        if c.action_head.use_proprio:
            state = torch.as_tensor(np.asarray(observation["state"], dtype=np.float32))
            batch["proprio"] = self.normalizer.normalize_proprio(state).unsqueeze(0)
        was_training = self.training
        if was_training:  # switching walks every submodule: costlier than the tiny demo model
            self.eval()
        try:
            chunk = self.predict_chunk(batch)[0].float().cpu()
        finally:
            if was_training:
                self.train()
        return self.normalizer.unnormalize_action(chunk).numpy()

    def cache_instructions(self, instructions: Sequence[str], release: bool = False) -> None:
        """Encode every instruction once (frozen encoder); `release` then frees the LM."""
        if not self.config.language_encoder.freeze:
            return  # a trainable encoder runs every step: nothing to cache
        if isinstance(self.language_encoder, DetachedLanguageEncoder):
            return  # features come from the feature cache
        self.language_encoder.precompute(list(instructions))
        if release:
            self.language_encoder.release_model()

    def param_groups(
        self, module_lrs: dict[str, float], weight_decay: float
    ) -> list[dict[str, Any]]:
        """AdamW groups per trainable module, each at its peak LR `module_lrs[name]` (see
        atlas.models.parameters)."""
        return parameters.param_groups(self, module_lrs, weight_decay)

    def parameter_counts(self) -> dict[str, dict[str, int]]:
        """{module: {"total", "trainable"}} for POLICY_MODULES."""
        return parameters.parameter_counts(self)

    def save_pretrained(
        self,
        path: str | Path,
        include_frozen_backbones: bool | None = None,
        state_dict: dict[str, Tensor] | None = None,
    ) -> None:
        """Export config.json, model.safetensors, normalization.json (atlas.models.pretrained).

        Frozen backbones reloadable from their configured paths are left out unless
        include_frozen_backbones=True; state_dict replaces self.state_dict() (FSDP export).
        """
        pretrained.save_pretrained(self, path, include_frozen_backbones, state_dict)

    @classmethod
    def from_pretrained(cls, path: str | Path) -> AtlasVLAPolicy:
        """Rebuild a policy exported by save_pretrained (weights loaded strictly)."""
        export = pretrained.read_export(path)
        # A VGGT inside the file is built on the meta device and takes the file's tensors as they
        # are; one left out is rebuilt from its checkpoint (or its seeded random init).
        policy = build_policy(
            export.config, export.normalizer, load_weights="vggt." in export.excluded
        )
        pretrained.load_export_weights(policy, export)
        return policy


def build_vggt_backbone(config: PolicyConfig, load_weights: bool = True) -> VGGT:
    """VGGT from `config.vggt`: the checkpoint's weights, or random init when none is set.

    load_weights=False builds it on the meta device (no memory): the caller then loads a state
    dict with assign (load_vggt_state_dict), or only counts parameters.
    """
    v = config.vggt
    arch = get_vggt_preset(v.preset, activation_checkpointing=v.activation_checkpointing)
    if not load_weights:
        return build_vggt(arch, device="meta")
    if v.checkpoint:
        model = build_vggt(arch, device="meta")  # the checkpoint's tensors become the weights
        load_vggt_weights(model, v.checkpoint)
        log.info("VGGT %s loaded from %s", v.preset, v.checkpoint)
        return model
    if v.freeze:
        log.warning("VGGT %s is frozen with random weights (vggt.checkpoint is not set)", v.preset)
    # A random init is a function of init_seed alone, not of whatever used the generator before:
    # the feature cache keys it by the seed, and an export that leaves it out rebuilds it.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.init_seed)
        return build_vggt(arch)


def build_policy(
    config: PolicyConfig,
    normalizer: Normalizer | None = None,
    meta: bool = False,
    load_weights: bool = True,
    backbones: bool = True,
) -> AtlasVLAPolicy:
    """Build the configured policy on the CPU (the trainer moves it to its device).

    meta=True allocates nothing (parameter counts of the full-size model). load_weights=False
    leaves VGGT on the meta device for the caller to load (from_pretrained does, from its file).
    backbones=False puts parameter-free stand-ins (atlas.models.detached) where VGGT and the
    language model would be: for training from the feature cache, whose batches carry their
    outputs.
    """
    if not backbones:  # training from the feature cache: VGGT and the LM are never loaded
        return AtlasVLAPolicy(
            config,
            DetachedVGGT(get_vggt_preset(config.vggt.preset)),
            DetachedLanguageEncoder(language_hidden_size(config.language_encoder)),
            normalizer,
        )
    vggt = build_vggt_backbone(config, load_weights=load_weights and not meta)
    language = LanguageEncoder(config.language_encoder, meta=meta)
    if meta:
        with torch.device("meta"):
            return AtlasVLAPolicy(config, vggt, language, normalizer)
    return AtlasVLAPolicy(config, vggt, language, normalizer)


__all__ = [
    "AtlasVLAPolicy",
    "PolicyConfig",
    "build_policy",
    "build_vggt_backbone",
]
