"""Export and reload a trained policy (`save_pretrained` / `from_pretrained`); safetensors only.

On disk:

    <dir>/
      config.json          the PolicyConfig (atlas.models.config): what the policy is built from
      model.safetensors    the policy state dict; metadata "excluded_prefixes" lists the module
                           prefixes deliberately left out (see below)
      normalization.json   Normalizer.to_dict() (absent when the policy has none)

What is saved. Trainable weights, buffers, and the frozen backbones that cannot be rebuilt
from a file (a random-init VGGT: the debug preset). Frozen backbones that can be rebuilt are left
out by default (include_frozen_backbones=None): VGGT when `vggt.checkpoint` is set, and the
frozen language encoder (its folder is needed anyway for the tokenizer and config.json). That
keeps an export of the full model at the size of its trainable part (tens of MB instead of
4.8 GB of VGGT-1B plus 13.5 GB of LLaMA-2-7B), which matters because the trainer exports `best/`
at every improvement. include_frozen_backbones=True writes everything (an export that no longer
needs the VGGT checkpoint file); a language model dropped by `release_model()` is left out in any
case. The metadata also holds a fingerprint (`atlas.models.fingerprint`, the scheme
checkpoints use too) of every left-out backbone.

Loading (`AtlasVLAPolicy.from_pretrained`: `read_export`, build, `load_export_weights`) builds the
model from config.json (left-out backbones reloaded from their configured paths, and checked
against their fingerprint, so a changed checkpoint file is an error rather than silently
different actions), then loads model.safetensors strictly: every other key must be present and
nothing may be extra. A config.json written before the PolicyConfig existed holds the whole run
config; it is read as the policy part of that config (atlas.models.config.read_policy_config).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor

from atlas.config.loader import to_dict
from atlas.data.normalization import Normalizer
from atlas.models.config import PolicyConfig, read_policy_config
from atlas.models.detached import DetachedVGGT
from atlas.models.fingerprint import fingerprint, same_weights
from atlas.models.geometry import upgrade_state_dict
from atlas.models.vggt import load_vggt_state_dict

if TYPE_CHECKING:
    from atlas.models.policy import AtlasVLAPolicy

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
NORMALIZATION_FILE = "normalization.json"
_SHOWN = 10


def excluded_prefixes(policy: AtlasVLAPolicy, include_frozen_backbones: bool | None) -> list[str]:
    """State-dict prefixes not written to model.safetensors (see module doc)."""
    c = policy.config
    leave_out = include_frozen_backbones is not True
    out = []
    if isinstance(policy.vggt, DetachedVGGT) or (leave_out and c.vggt.freeze and c.vggt.checkpoint):
        out.append("vggt.")  # reloaded from its checkpoint, or its seeded random init rebuilt
    if policy.language_encoder.released or (leave_out and c.language_encoder.freeze):
        out.append("language_encoder.")
    return out


def _under(state: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {k: v for k, v in state.items() if k.startswith(prefix)}


def _require_finite(state: dict[str, Tensor], path: Path) -> None:
    """Refuse to export NaN or inf weights: a policy that acts on them is worse than none."""
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise FloatingPointError(
            f"not exporting {path}: {len(bad)} weight tensor(s) hold NaN or inf (the first: "
            f"{bad[0]}); the training diverged before this export"
        )


def save_pretrained(
    policy: AtlasVLAPolicy,
    path: str | Path,
    include_frozen_backbones: bool | None = None,
    state_dict: dict[str, Tensor] | None = None,
) -> None:
    """Write config.json, model.safetensors and normalization.json into `path`.

    state_dict: the weights to write instead of policy.state_dict() (e.g. gathered from FSDP
    shards by the trainer); same keys.
    """
    path = Path(path)
    full = policy.state_dict() if state_dict is None else state_dict
    excluded = excluded_prefixes(policy, include_frozen_backbones)
    prints = {p: fingerprint(_under(full, p)) for p in excluded if _under(full, p)}
    state = {k: v for k, v in full.items() if not k.startswith(tuple(excluded))}
    _require_finite(state, path)  # before anything is created
    path.mkdir(parents=True, exist_ok=True)
    metadata = {"excluded_prefixes": json.dumps(excluded), "fingerprints": json.dumps(prints)}
    tmp = path / (WEIGHTS_FILE + ".tmp")
    save_file(_for_safetensors(state), tmp, metadata=metadata)
    tmp.replace(path / WEIGHTS_FILE)
    (path / CONFIG_FILE).write_text(json.dumps(to_dict(policy.config), indent=2) + "\n")
    if policy.normalizer is not None:
        norm = json.dumps(policy.normalizer.to_dict(), indent=2)
        (path / NORMALIZATION_FILE).write_text(norm + "\n")
    log.info("saved policy to %s (%d tensors; left out: %s)", path, len(state), excluded or "none")


@dataclass
class Export:
    """What `read_export` finds in an export folder, before any model is built."""

    path: Path
    config: PolicyConfig
    normalizer: Normalizer | None
    state: dict[str, Tensor]  # model.safetensors
    excluded: tuple[str, ...]  # state-dict prefixes deliberately left out
    fingerprints: dict[str, dict[str, float]]  # of the left-out backbones


def read_export(path: str | Path) -> Export:
    """Read config.json, normalization.json and model.safetensors of an export (module doc)."""
    path = Path(path)
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (path / name).is_file():
            raise FileNotFoundError(f"{path}: no {name} (not a save_pretrained export)")
    config = read_policy_config(
        json.loads((path / CONFIG_FILE).read_text()), str(path / CONFIG_FILE)
    )
    normalizer = None
    if (path / NORMALIZATION_FILE).is_file():
        normalizer = Normalizer.from_dict(json.loads((path / NORMALIZATION_FILE).read_text()))
    with safe_open(str(path / WEIGHTS_FILE), framework="pt") as f:
        metadata = f.metadata() or {}
    return Export(
        path=path,
        config=config,
        normalizer=normalizer,
        state=load_file(str(path / WEIGHTS_FILE)),
        excluded=tuple(json.loads(metadata.get("excluded_prefixes", "[]"))),
        fingerprints=json.loads(metadata.get("fingerprints", "{}")),
    )


def load_export_weights(policy: AtlasVLAPolicy, export: Export) -> None:
    """Load the export's weights into the policy built from its config, strictly (module doc)."""
    weights = export.path / WEIGHTS_FILE
    state = dict(export.state)
    upgrade_state_dict(state, "geometry.")  # parameter names of earlier versions
    expected = policy.state_dict()
    missing = [k for k in expected if k not in state and not k.startswith(export.excluded)]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise RuntimeError(
            f"{weights} does not match the model built from {CONFIG_FILE}: "
            f"missing {missing[:_SHOWN]} ({len(missing)}), unexpected {unexpected[:_SHOWN]} "
            f"({len(unexpected)})"
        )
    if "vggt." not in export.excluded:
        vggt_state = {k[5:]: state.pop(k) for k in list(state) if k.startswith("vggt.")}
        load_vggt_state_dict(policy.vggt, vggt_state, source=str(weights))
    policy.load_state_dict(state, strict=False)  # strictness checked above, modulo `excluded`
    _check_fingerprints(export.path, export.fingerprints, policy.state_dict())
    reloaded = list(export.excluded) or "none"
    log.info("loaded policy from %s (reloaded from their paths: %s)", export.path, reloaded)


def _check_fingerprints(
    path: Path, saved: dict[str, dict[str, Any]], state: dict[str, Tensor]
) -> None:
    """The reloaded backbones must be the ones the policy was saved with."""
    for prefix, want in saved.items():
        if not same_weights(want, _under(state, prefix)):
            raise RuntimeError(
                f"{path}: the {prefix.rstrip('.')} weights reloaded from the configured path "
                "differ from those the policy was saved with; point the config at the original "
                "weights, or export with include_frozen_backbones=True"
            )


def _for_safetensors(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Contiguous CPU tensors; a tensor sharing storage with an earlier one is copied.

    safetensors refuses shared storage (tied weights) and non-contiguous views.
    """
    seen: set[int] = set()
    out = {}
    for k, v in state.items():
        v = v.detach().cpu().contiguous()
        ptr = v.untyped_storage().data_ptr()
        out[k] = v.clone() if ptr in seen else v
        seen.add(ptr)
    return out
