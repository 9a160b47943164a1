"""The consolidated `pretrained_model` export is the same whatever the strategy: exported by 2
processes under ddp, fsdp2 (every block sharded) and deepspeed, reloaded with from_pretrained,
they predict exactly what the ddp export predicts."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from _launch import ROOT, run, torchrun_cmd
from safetensors.torch import load_file

from atlas.models.policy import AtlasVLAPolicy
from atlas.models.testing import make_fake_batch

STRATEGIES = ["ddp", "fsdp2"]
if importlib.util.find_spec("deepspeed") is not None:  # the optional extra
    STRATEGIES.append("deepspeed")


def test_exports_predict_like_the_ddp_export(tmp_path: Path) -> None:
    worker = ROOT / "tests" / "distributed" / "_export_worker.py"
    run(torchrun_cmd([str(worker), str(tmp_path), *STRATEGIES]))
    exports = {name: tmp_path / name / "export" for name in STRATEGIES}
    reference = load_file(str(exports["ddp"] / "model.safetensors"))
    predictions = {}
    for name, path in exports.items():
        weights = load_file(str(path / "model.safetensors"))
        assert sorted(weights) == sorted(reference), name
        assert all(weights[k].equal(reference[k]) for k in reference), name
        policy = AtlasVLAPolicy.from_pretrained(path).eval()
        batch = make_fake_batch(policy.config, 3)
        with torch.no_grad():
            predictions[name] = policy.predict_chunk(batch)
    for name, pred in predictions.items():
        assert pred.equal(predictions["ddp"]), name
