"""A stand-in for a frozen backbone whose outputs arrive precomputed in the batch.

Training from the feature cache (`data.use_feature_cache`) must not load VGGT or the language
model at all: `build_policy(cfg, backbones=False)` puts a `DetachedBackbone` where each would be.
It holds no parameters (nothing to move to the GPU, save, or broadcast under DDP) and keeps only
the attributes the rest of the policy reads: `config` (VGGT) and `hidden_size` (language model).
Calling it is an error that says what the batch lacks.
"""

from __future__ import annotations

from typing import Any

from torch import nn


class DetachedBackbone(nn.Module):
    """A parameter-free placeholder for the frozen backbone `name` (see module doc)."""

    released = True  # like a LanguageEncoder after release_model(): no weights to save
    model = None

    def __init__(self, name: str, **attributes: Any) -> None:
        super().__init__()
        self.name = name
        for key, value in attributes.items():
            setattr(self, key, value)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(
            f"the policy was built without its {self.name} (backbones=False, for training from "
            "the feature cache): the batch must carry its precomputed features "
            "(atlas.cache.CachedFeatureDataset)"
        )
