"""One fingerprint for frozen weights, in checkpoints (meta.json) and in exports (safetensors).

Frozen backbones (the pretrained VGGT and language model, gigabytes that never change) are left
out of checkpoints and exports and rebuilt from their source when loaded; the fingerprint tells
whether the rebuilt weights are the ones the file was saved with. Hashing gigabytes at every save
would cost seconds, so a strided sample of each tensor enters a sha256 with its name and shape.
The sampled values are rounded to bf16 first: a backbone held in bf16 when saved and rebuilt in
fp32 (or the reverse) still matches, while another pretrained file or a random init does not.

    {"scheme": 2, "tensors": 391, "numel": 1256000000, "dtypes": {"torch.float32": 391},
     "sample_sha256": "9f2c..."}

Fingerprints written by older versions (no "scheme") are checked by `legacy_fingerprint_matches`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

SCHEME = 2
_SAMPLE = 1024  # values per tensor that enter the hash
_LEGACY_SAMPLE = 1024  # values per tensor in the fingerprints of older versions


def fingerprint(tensors: Mapping[str, Tensor]) -> dict[str, Any]:
    """Names, shapes, dtypes and a bf16-rounded strided sample of `tensors`, hashed."""
    h = hashlib.sha256()
    numel = 0
    dtypes: dict[str, int] = {}
    for key in sorted(tensors):
        t = tensors[key].detach()
        numel += t.numel()
        dtypes[str(t.dtype)] = dtypes.get(str(t.dtype), 0) + 1
        flat = t.reshape(-1)
        stride = max(1, flat.numel() // _SAMPLE)
        sample = flat[::stride][:_SAMPLE].cpu().to(torch.bfloat16).float()
        h.update(f"{key}:{tuple(t.shape)}:".encode())
        h.update(sample.numpy().tobytes())
    return {
        "scheme": SCHEME,
        "tensors": len(tensors),
        "numel": numel,
        "dtypes": dtypes,
        "sample_sha256": h.hexdigest(),
    }


def same_weights(saved: Mapping[str, Any], tensors: Mapping[str, Tensor]) -> bool:
    """Do `tensors` match the fingerprint `saved` (this scheme or an older one)?"""
    if saved.get("scheme") == SCHEME:
        now = fingerprint(tensors)
        return all(now[k] == saved[k] for k in ("tensors", "numel", "sample_sha256"))
    return legacy_fingerprint_matches(saved, tensors)


def legacy_fingerprint_matches(saved: Mapping[str, Any], tensors: Mapping[str, Tensor]) -> bool:
    """Fingerprints written before `fingerprint.SCHEME` 2, so older run directories and exports
    keep loading: checkpoints hashed float32 samples ("sample_sha256"); exports summed the
    absolute values of a sample per backbone ("abs_sum", within a relative 1e-3)."""
    h, numel, total = hashlib.sha256(), 0, 0.0
    for key in sorted(tensors):
        flat = tensors[key].detach().reshape(-1)
        numel += flat.numel()
        stride = max(1, flat.numel() // _LEGACY_SAMPLE)
        total += float(flat[::stride].double().abs().sum())
        h.update(f"{key}:{tuple(tensors[key].shape)}:".encode())
        h.update(flat[::stride][:_LEGACY_SAMPLE].float().cpu().numpy().tobytes())
    if "abs_sum" in saved:
        scale = max(abs(saved["abs_sum"]), 1e-12)
        return numel == saved["numel"] and abs(total - saved["abs_sum"]) / scale <= 1e-3
    return h.hexdigest() == saved.get("sample_sha256")
