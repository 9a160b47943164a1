"""One fingerprint scheme for frozen weights; run directories and exports of older versions load.

The older formats are written here as those versions wrote them: checkpoints hashed float32
samples (`sample_sha256`, no `scheme`), exports stored the absolute sum of a sample (`abs_sum`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from _ckpt_toy import ToyModel, toy_config, train
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor

from atlas.checkpoint import layout
from atlas.checkpoint.manager import CheckpointError
from atlas.models.fingerprint import fingerprint, same_weights
from atlas.models.policy import AtlasVLAPolicy, build_policy
from atlas.models.testing import TEST_VGGT_PRESET, tiny_policy_config
from atlas.models.vggt import build_vggt


def v1_checkpoint_print(tensors: dict[str, Tensor]) -> dict[str, object]:
    h, numel, dtypes = hashlib.sha256(), 0, {}
    for key in sorted(tensors):
        t = tensors[key].detach()
        numel += t.numel()
        dtypes[str(t.dtype)] = dtypes.get(str(t.dtype), 0) + 1
        flat = t.reshape(-1)
        sample = flat[:: max(1, flat.numel() // 1024)][:1024].float()
        h.update(f"{key}:{tuple(t.shape)}:".encode())
        h.update(sample.numpy().tobytes())
    return {
        "tensors": len(tensors),
        "numel": numel,
        "dtypes": dtypes,
        "sample_sha256": h.hexdigest(),
    }


def v1_export_print(tensors: dict[str, Tensor]) -> dict[str, float]:
    numel, total = 0, 0.0
    for value in tensors.values():
        flat = value.detach().reshape(-1)
        numel += flat.numel()
        total += float(flat[:: max(1, flat.numel() // 1024)].double().abs().sum())
    return {"numel": numel, "abs_sum": total}


def test_bf16_rounding_matches_and_other_weights_do_not() -> None:
    torch.manual_seed(0)
    weights = {"a": torch.randn(64, 64), "b": torch.randn(3)}
    saved = fingerprint({k: v.to(torch.bfloat16) for k, v in weights.items()})
    assert same_weights(saved, weights)  # saved in bf16, rebuilt in fp32
    assert not same_weights(saved, {**weights, "b": torch.randn(3)})
    assert not same_weights(saved, {"a": weights["a"]})


def test_checkpoint_with_a_v1_fingerprint_resumes(tmp_path: Path) -> None:
    train(toy_config(tmp_path), total=2)
    ckpt = tmp_path / "iter_00000002"
    meta = json.loads((ckpt / layout.META).read_text())
    torch.manual_seed(0)  # as `build` seeds: the same frozen backbone
    frozen = {k: v for k, v in ToyModel().state_dict().items() if k.startswith("backbone.")}
    meta["model"]["frozen"] = v1_checkpoint_print(frozen)
    (ckpt / layout.META).write_text(json.dumps(meta))
    layout.write_marker(ckpt, extra={"step": 2})
    _, progress = train(toy_config(tmp_path), total=4)
    assert progress.step == 4
    meta["model"]["frozen"]["sample_sha256"] = "0" * 64  # another backbone than the saved one
    (ckpt / layout.META).write_text(json.dumps(meta))
    layout.write_marker(ckpt, extra={"step": 2})
    with pytest.raises(CheckpointError, match="frozen"):
        train(toy_config(tmp_path, resume=str(ckpt)), total=4)


def test_export_with_a_v1_fingerprint_loads(tmp_path: Path) -> None:
    vggt = tmp_path / "vggt.safetensors"
    torch.manual_seed(0)
    save_file(build_vggt(TEST_VGGT_PRESET).state_dict(), vggt)
    torch.manual_seed(0)
    policy = build_policy(tiny_policy_config(vggt={"checkpoint": str(vggt)}))
    export = tmp_path / "export"
    policy.save_pretrained(export)
    file = export / "model.safetensors"
    with safe_open(str(file), framework="pt") as f:
        metadata = dict(f.metadata())
    assert json.loads(metadata["fingerprints"])["vggt."]["scheme"] == 2
    full = policy.state_dict()
    v1 = {p: v1_export_print({k: v for k, v in full.items() if k.startswith(p)}) for p in ["vggt."]}
    save_file(load_file(file), file, metadata={**metadata, "fingerprints": json.dumps(v1)})
    AtlasVLAPolicy.from_pretrained(export)  # the v1 fingerprint of the same VGGT file matches
    torch.manual_seed(1)
    save_file(build_vggt(TEST_VGGT_PRESET).state_dict(), vggt)  # other weights, same path
    with pytest.raises(RuntimeError, match="vggt weights reloaded .* differ"):
        AtlasVLAPolicy.from_pretrained(export)
