"""Which model tensors a checkpoint stores, and a cheap fingerprint of the ones it does not.

Trainable parameters and all buffers change during training and are always saved. Frozen
parameters (`requires_grad=False`: the pretrained VGGT backbone and language model, gigabytes)
never change, so by default they are rebuilt from their source on resume instead of being copied
into every checkpoint; `frozen_fingerprint` records enough to notice if that source changed.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from atlas.checkpoint.layout import MODEL, CheckpointError
from atlas.distributed.strategy import Strategy, available_strategies, strategy_class
from atlas.models.fingerprint import fingerprint, same_weights

log = logging.getLogger(__name__)


def frozen_keys(policy: nn.Module) -> set[str]:
    """State-dict keys of parameters that do not require gradients (tied names included)."""
    return {n for n, p in policy.named_parameters(remove_duplicate=False) if not p.requires_grad}


def model_state(policy: nn.Module, save_frozen: bool) -> tuple[dict[str, torch.Tensor], dict]:
    """CPU tensors to write to model.safetensors, and what meta.json says about them."""
    frozen = frozen_keys(policy)
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for key, value in policy.state_dict().items():
        if key in frozen and not save_frozen:
            continue
        t = value.detach().cpu().contiguous()
        ptr = t.untyped_storage().data_ptr()
        if ptr in seen and t.numel() > 0:
            t = t.clone()  # safetensors refuses tensors sharing memory (tied weights)
        seen.add(ptr)
        out[key] = t
    meta: dict[str, Any] = {
        "file": "model.safetensors",
        "tensors": len(out),
        "frozen_saved": save_frozen,
        "frozen": frozen_fingerprint(policy),
    }
    return out, meta


def frozen_tensors(policy: nn.Module) -> dict[str, torch.Tensor]:
    """The frozen entries of the policy's state dict (what `model_state` leaves out)."""
    state, keys = policy.state_dict(), frozen_keys(policy)
    return {k: state[k] for k in keys}


def frozen_fingerprint(policy: nn.Module) -> dict[str, Any]:
    """The fingerprint (`atlas.models.fingerprint`) of the policy's frozen weights."""
    return fingerprint(frozen_tensors(policy))


def check_frozen(
    path: Path,
    saved: dict[str, Any],
    tensors: dict[str, torch.Tensor],
    seed: tuple[int, int] | None = None,
) -> None:
    """Frozen weights are not in the checkpoint: make sure the rebuilt `tensors` are the same.

    `seed`: (checkpoint's, this run's) training.seed when they differ. A frozen part without
    pretrained weights is a random init of the seed, so a new seed rebuilds different weights.
    """
    now = fingerprint(tensors)
    if saved["tensors"] != now["tensors"] or saved["numel"] != now["numel"]:
        raise CheckpointError(
            f"{path}: the frozen part of the model changed ({saved['tensors']} tensors / "
            f"{saved['numel']} values at save time, {now['tensors']} / {now['numel']} now)"
        )
    if saved["dtypes"] != now["dtypes"]:
        log.warning(
            "%s: frozen weights were %s, now %s: the resumed run is not bitwise the same",
            path,
            saved["dtypes"],
            now["dtypes"],
        )
    if same_weights(saved, tensors):
        return
    if seed is not None:
        raise CheckpointError(
            f"{path}: the frozen weights differ from the checkpoint's: training.seed changed "
            f"from {seed[0]} to {seed[1]}, and a frozen part without pretrained weights (no "
            f"model.vggt.checkpoint, say) is a random init of the seed. Resume with --set "
            f"training.seed={seed[0]}, or start a new run from the weights with "
            f"checkpoint.load_from: {path}"
        )
    raise CheckpointError(
        f"{path}: the frozen (pretrained) weights differ from the ones this checkpoint was "
        "trained with (model.vggt.checkpoint or the language encoder changed?). Point the "
        "config at the original weights, or use checkpoint.load_from to start a new run."
    )


def load_resume_weights(path: Path, policy: nn.Module, info: dict[str, Any]) -> None:
    """Restore model.safetensors of checkpoint `path` strictly (frozen keys may be absent)."""
    state = read_safetensors(path / MODEL)
    frozen = frozen_keys(policy)
    try:
        missing, unexpected = policy.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatches: the architecture changed
        raise CheckpointError(f"{path / MODEL} does not fit the model: {e}") from None
    missing_trainable = [k for k in missing if k not in frozen or info["frozen_saved"]]
    if unexpected or missing_trainable:
        raise CheckpointError(
            f"{path / MODEL} does not match the model (did model.* change?): missing "
            f"{missing_trainable[:8]}, unexpected {unexpected[:8]}"
        )


def read_safetensors(file: Path) -> dict[str, torch.Tensor]:
    """A safetensors file on the CPU; a damaged one raises a one-line CheckpointError."""
    if not file.is_file():
        what = "a directory, not a file" if file.is_dir() else "missing"
        raise CheckpointError(f"{file}: {what} (expected a .safetensors weights file)")
    try:
        return load_file(str(file), device="cpu")
    except Exception as e:  # SafetensorError, OSError: truncated, garbage, another format
        problem = " ".join(str(e).split())[:200]
        raise CheckpointError(f"{file}: not a readable safetensors file ({problem})") from None


def strategy_weights(directory: Path) -> type[Strategy] | None:
    """The strategy whose own weights format `directory` holds (FSDP2's dcp/, ...), if any."""
    for name in available_strategies():
        cls = strategy_class(name)
        if cls.weights_file is not None and (directory / cls.weights_file).exists():
            return cls
    return None


def weights_names() -> tuple[str, ...]:
    """Names whose presence makes a directory a weights source: ours and every strategy's."""
    names = (strategy_class(n).weights_file for n in available_strategies())
    return (MODEL, *(n for n in names if n is not None))


def load_weights_only(source: Path, policy: nn.Module) -> None:
    """Weights from `source` (see layout.weights_source) into `policy`, leniently:
    mismatched shapes and unknown keys are skipped, trainable keys absent keep their init; every
    such key is reported (fine-tuning, transfer learning)."""
    skipped: list[str] = []
    unexpected: list[str] = []
    owner = strategy_weights(source) if source.is_dir() else None
    if owner is not None and not (source / MODEL).is_file():
        missing = owner.load_weights(source, policy)
    else:
        state = read_safetensors(source / MODEL if source.is_dir() else source)
        own = policy.state_dict()
        skipped = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
        for k in skipped:
            del state[k]
        missing, unexpected = policy.load_state_dict(state, strict=False)
    frozen = frozen_keys(policy)
    problems = (
        ("shape mismatch, kept fresh", skipped),
        ("not in the model, ignored", list(unexpected)),
        ("trainable but not in the file, kept fresh", [k for k in missing if k not in frozen]),
    )
    for what, keys in problems:
        if keys:
            log.warning("load_from %s: %d tensors %s: %s", source, len(keys), what, keys[:8])
    log.info(
        "Loaded weights only from %s; optimizer, LR schedule and counters start fresh.", source
    )
