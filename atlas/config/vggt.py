"""Typed configuration of the VGGT reimplementation, and its named presets.

`VGGTConfig()` with no arguments is the official VGGT-1B (`facebook/VGGT-1B`): every default here
is a default of the official `VGGT`, `Aggregator`, `DinoVisionTransformer` (`vit_large`),
`CameraHead` and `DPTHead` constructors. `VGGT_PRESETS` maps a string key to a config.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field, fields, replace
from typing import Any

DPT_ACTIVATIONS = ("exp", "inv_log", "norm_exp", "norm", "relu", "sigmoid", "linear")
DPT_CONF_ACTIVATIONS = ("expp1", "expp0", "sigmoid")
POSE_ACTIVATIONS = ("linear", "inv_log", "exp", "relu")


@dataclass(frozen=True)
class VGGTConfig:
    """Every size and switch of VGGT. Defaults reproduce the official VGGT-1B exactly."""

    # Input geometry.
    img_size: int = 518  # side of the square image the DINO pos_embed grid was trained at
    patch_size: int = 14  # DINO conv patch size; H and W should be multiples of it

    # Aggregator (alternating frame/global attention). Its width is also the DINO width, because
    # the DINO patch tokens enter the aggregator stream as they are (no projection in between).
    embed_dim: int = 1024  # C; the aggregator emits 2C-wide tokens ([frame | global])
    depth: int = 24  # number of frame blocks (= number of global blocks = number of outputs)
    num_heads: int = 16  # heads of frame and global attention (head dim = embed_dim / num_heads)
    mlp_ratio: float = 4.0
    num_register_tokens: int = 4  # per frame, in DINO and in the aggregator alike
    qkv_bias: bool = True
    proj_bias: bool = True
    ffn_bias: bool = True
    qk_norm: bool = True  # LayerNorm over head_dim on q and k before RoPE
    rope_freq: float = 100.0  # 2D RoPE base; <= 0 disables RoPE
    init_values: float = 0.01  # LayerScale init of the aggregator blocks
    aa_block_size: int = 1  # consecutive frame blocks (then global blocks) per alternation step

    # DINOv2 patch embedding ("dinov2_vitl14_reg" layout; width = embed_dim).
    dino_depth: int = 24
    dino_num_heads: int = 16
    dino_mlp_ratio: float = 4.0
    dino_init_values: float = 1.0  # LayerScale init inside DINO

    # Camera head (reads the camera token of the last aggregator layer).
    enable_camera: bool = True
    camera_trunk_depth: int = 4
    camera_num_heads: int = 16
    camera_mlp_ratio: float = 4.0
    camera_init_values: float = 0.01
    camera_trans_act: str = "linear"
    camera_quat_act: str = "linear"
    camera_fl_act: str = "relu"
    camera_num_iterations: int = 4  # iterative refinement steps at inference

    # DPT heads (depth and world points share these sizes, as in the official VGGT).
    enable_depth: bool = True
    enable_point: bool = True
    dpt_features: int = 256
    dpt_out_channels: tuple[int, int, int, int] = (256, 512, 1024, 1024)
    dpt_layers: tuple[int, int, int, int] = (4, 11, 17, 23)  # aggregator outputs the DPT reads
    dpt_pos_embed: bool = True
    dpt_down_ratio: int = 1
    dpt_frames_chunk_size: int | None = 8  # frames per DPT pass; bounds memory, not results
    depth_activation: str = "exp"
    depth_conf_activation: str = "expp1"
    point_activation: str = "inv_log"
    point_conf_activation: str = "expp1"

    # Training only: recompute each aggregator block in backward (torch.utils.checkpoint).
    activation_checkpointing: bool = False

    # Free-form note (e.g. where a preset comes from); not used by the model.
    notes: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        # Lists from YAML/JSON become tuples so the config stays hashable and immutable.
        object.__setattr__(self, "dpt_out_channels", tuple(self.dpt_out_channels))
        object.__setattr__(self, "dpt_layers", tuple(self.dpt_layers))
        self._validate()

    def _validate(self) -> None:
        """Fail early, with the fix in the message."""
        checks = [
            (self.embed_dim % self.num_heads == 0, "embed_dim must be divisible by num_heads"),
            (
                self.embed_dim % self.dino_num_heads == 0,
                "embed_dim must be divisible by dino_num_heads",
            ),
            (not self.rope_freq > 0 or self.head_dim % 4 == 0, "RoPE needs head_dim % 4 == 0"),
            (self.depth % self.aa_block_size == 0, "depth must be divisible by aa_block_size"),
            ((2 * self.embed_dim) % self.camera_num_heads == 0, "2*embed_dim % camera_num_heads"),
            (len(self.dpt_out_channels) == 4, "dpt_out_channels needs exactly 4 entries"),
            (len(self.dpt_layers) == 4, "dpt_layers needs exactly 4 entries"),
            (
                all(-self.depth <= i < self.depth for i in self.dpt_layers),
                "dpt_layers out of range",
            ),
            (self.dpt_features % 2 == 0, "dpt_features must be even"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"VGGTConfig: {message} (got {self})")
        for name, allowed in [
            ("camera_trans_act", POSE_ACTIVATIONS),
            ("camera_quat_act", POSE_ACTIVATIONS),
            ("camera_fl_act", POSE_ACTIVATIONS),
            ("depth_activation", DPT_ACTIVATIONS),
            ("point_activation", DPT_ACTIVATIONS),
            ("depth_conf_activation", DPT_CONF_ACTIVATIONS),
            ("point_conf_activation", DPT_CONF_ACTIVATIONS),
        ]:
            if getattr(self, name) not in allowed:
                raise ValueError(f"VGGTConfig.{name}={getattr(self, name)!r}; allowed: {allowed}")

    @property
    def head_dim(self) -> int:
        """Per-head width of the aggregator attention (64 for VGGT-1B)."""
        return self.embed_dim // self.num_heads

    @property
    def dino_embed_dim(self) -> int:
        """Width of the DINO ViT; it must equal the aggregator width (1024 for ViT-L)."""
        return self.embed_dim

    @property
    def patch_start_idx(self) -> int:
        """Index of the first patch token in each frame: 1 camera + register tokens."""
        return 1 + self.num_register_tokens

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> VGGTConfig:
        """Build from a plain dict (e.g. parsed YAML), rejecting unknown keys with a suggestion."""
        known = {f.name for f in fields(cls)}
        for key in values:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ValueError(f"VGGTConfig has no field {key!r}{hint}")
        return cls(**values)


VGGT_1B = VGGTConfig(notes="official facebook/VGGT-1B (all official constructor defaults)")

# Small enough to train and run on CPU at 224 px: 4 alternating layers of width 64, a 2-block DINO.
VGGT_TINY = VGGTConfig(
    img_size=224,
    embed_dim=64,
    depth=4,
    num_heads=4,
    dino_depth=2,
    dino_num_heads=4,
    camera_trunk_depth=2,
    camera_num_heads=4,
    dpt_features=32,
    dpt_out_channels=(16, 32, 64, 64),
    dpt_layers=(0, 1, 2, 3),
    notes="CPU debug preset for the demo policy (random init; no pretrained weights exist)",
)

VGGT_PRESETS: dict[str, VGGTConfig] = {"vggt_1b": VGGT_1B, "tiny": VGGT_TINY}


def get_vggt_preset(name: str, **overrides: Any) -> VGGTConfig:
    """Return the preset `name` (a key of VGGT_PRESETS), with optional field overrides."""
    if name not in VGGT_PRESETS:
        close = difflib.get_close_matches(name, VGGT_PRESETS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise KeyError(f"Unknown VGGT preset {name!r}; known: {sorted(VGGT_PRESETS)}.{hint}")
    return replace(VGGT_PRESETS[name], **overrides)
