"""Stand-ins for frozen backbones whose outputs arrive precomputed in the batch.

Training from the feature cache (`data.use_feature_cache`) must not load VGGT or the language
model at all: `build_policy(config, backbones=False)` puts a `DetachedVGGT` and a
`DetachedLanguageEncoder` where they would be. They hold no parameters (nothing to move to the
GPU, save, or broadcast under DDP) and keep only the attributes the rest of the policy reads:
`config` (VGGT's architecture) and `hidden_size` (the language model's width). Calling one is an
error that says what the batch lacks.
"""

from __future__ import annotations

from typing import NoReturn

from torch import nn

from atlas.config.vggt import VGGTConfig


class DetachedBackbone(nn.Module):
    """A parameter-free placeholder for the frozen backbone `name` (see module doc)."""

    released = True  # like a LanguageEncoder after release_model(): no weights to save
    model = None

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def forward(self, *args: object, **kwargs: object) -> NoReturn:
        raise RuntimeError(
            f"the policy was built without its {self.name} (backbones=False, for training from "
            "the feature cache): the batch must carry its precomputed features "
            "(atlas.cache.CachedFeatureDataset)"
        )


class DetachedVGGT(DetachedBackbone):
    """In place of VGGT: its architecture only (the geometry encoder's input width)."""

    def __init__(self, config: VGGTConfig) -> None:
        super().__init__("vggt")
        self.config = config


class DetachedLanguageEncoder(DetachedBackbone):
    """In place of the language encoder: its width only (the fusion's input width)."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__("language_encoder")
        self.hidden_size = hidden_size
