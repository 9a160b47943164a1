"""PolicyConfig: everything `AtlasVLAPolicy` is built from, and nothing of the run that trains it.

The model sections are those of `model:` in the run config (`atlas.config.schema.ModelConfig`),
and the few facts about the data the policy is built for come from `data:` (which cameras, how
many frames of history, the image side, the orientation transform). An export's config.json is
this config (`to_dict`) next to normalization.json, so a policy can be rebuilt and run without
the run config, its data paths or its optimizer settings.

`policy_config(cfg)` takes it from a run config. `read_policy_config(data, source)` reads a
config.json, including those written before this config existed (they held the whole run
config: `{"model": ..., "data": ..., "training": ...}`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from atlas.config.loader import config_from_resolved, from_dict
from atlas.config.schema import AtlasConfig, ModelConfig, Orientation, SyntheticConfig


@dataclass
class PolicyConfig(ModelConfig):
    """The model sections (vggt, language_encoder, geometry, fusion, action_head, loss; see
    ModelConfig) and the data facts below."""

    # Cameras in input order (frame 0 of every sample is the first camera's current frame).
    cameras: list[str] = field(default_factory=lambda: ["agentview_rgb", "eye_in_hand_rgb"])
    history: int = 1  # frames per camera
    image_size: int = 224  # square side fed to VGGT
    orientation: Orientation = "vflip"  # what predict_action does to raw frames (docs/LIBERO.md §3)
    blank_images: bool = False  # the data.blank_images ablation: the policy sees black frames
    # The instruction wording it was trained with (docs/LIBERO.md §2): rollouts prompt with it.
    instruction_source: Literal["filename", "problem_info"] = "filename"
    # The synthetic dataset it learned, if any: the synthetic rollout suite builds that world.
    synthetic: SyntheticConfig | None = None
    # Seeds the random initialization of a VGGT without a checkpoint, and nothing else: an export
    # that leaves such a backbone out rebuilds it from this.
    init_seed: int = 42

    @property
    def num_frames(self) -> int:
        """S: frames per sample, cameras x history."""
        return len(self.cameras) * self.history


# Top-level keys of a run config that a PolicyConfig never has.
RUN_SECTIONS = {"model", "data", "training", "checkpoint", "logging", "eval"}


def policy_config(cfg: AtlasConfig) -> PolicyConfig:
    """The policy part of a run config."""
    d = cfg.data
    sections = {f.name: getattr(cfg.model, f.name) for f in dataclasses.fields(ModelConfig)}
    return PolicyConfig(
        **sections,
        cameras=list(d.cameras),
        history=d.history,
        image_size=d.image_size,
        orientation=d.orientation,
        blank_images=d.blank_images,
        instruction_source=d.instruction_source,
        synthetic=d.synthetic,
        init_seed=cfg.training.seed,
    )


def read_policy_config(data: dict[str, Any], source: str) -> PolicyConfig:
    """A PolicyConfig from a config.json: this config's fields, or an earlier whole run config."""
    if RUN_SECTIONS & set(data):  # an export written with the (whole) AtlasConfig
        return policy_config(config_from_resolved(data, source))
    geometry = data.get("geometry")
    if isinstance(geometry, dict) and "keypoints_standardize" not in geometry:
        # Written before the maps were standardized: keep the softmax it was trained with.
        data = {**data, "geometry": {**geometry, "keypoints_standardize": False}}
    return from_dict(PolicyConfig, data, source)


__all__ = ["PolicyConfig", "policy_config", "read_policy_config"]
