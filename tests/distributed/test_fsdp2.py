"""FSDP2 on CPU with gloo: sharded training killed and resumed, DCP checkpoints across world sizes.

The 2-process runs come from the `fsdp2_runs` fixture (conftest.py): bf16 autocast + bf16 block
parameters, ZeRO-3-like resharding and activation checkpointing, gradient accumulation 2, dropout.
"""

from __future__ import annotations

from pathlib import Path

import torch
from _toy import ToyPolicy, make_batch, toy_config, train_step

from atlas.distributed.env import DistInfo
from atlas.distributed.fsdp2 import DCP_DIR, DCP_MARKER, load_model_weights, shard_units
from atlas.distributed.strategy import build_strategy


def _load(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert sorted(a) == sorted(b)
    diff = {k: (a[k].float() - b[k].float()).abs().max().item() for k in a if not a[k].equal(b[k])}
    assert not diff, f"tensors differ (max abs diff per key): {diff}"


def test_killed_and_resumed_matches_uninterrupted_bitwise(fsdp2_runs: Path) -> None:
    resumed = _load(fsdp2_runs / "run" / "final.pt")
    reference = _load(fsdp2_runs / "ref" / "final.pt")
    _assert_same(resumed, reference)
    # Keys are the policy's own: no FSDP or activation-checkpoint wrapper prefixes leak out.
    assert set(resumed) == set(ToyPolicy().state_dict())


def test_checkpoint_is_sharded_dcp(fsdp2_runs: Path) -> None:
    dcp_dir = fsdp2_runs / "run" / "iter_3" / DCP_DIR
    assert (dcp_dir / DCP_MARKER).is_file()
    assert sorted(p.name for p in dcp_dir.glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]


def test_two_process_checkpoint_loads_in_one_process(fsdp2_runs: Path) -> None:
    """World size 2 -> 1: DCP reshards; weights bitwise, Adam state complete, training goes on."""
    ckpt = fsdp2_runs / "run" / "iter_3"
    cfg = toy_config("fsdp2", "bf16", zero3=True)
    strategy = build_strategy(cfg, DistInfo(), "bf16")  # no process group: unwrapped policy
    torch.manual_seed(123)  # different init: everything trainable must come from the checkpoint
    policy = strategy.wrap(ToyPolicy())
    frozen = {k: v.clone() for k, v in policy.state_dict().items() if k.startswith("vggt.")}
    params = [p for p in policy.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.01)
    policy = strategy.prepare(policy, opt)
    strategy.load_state(ckpt, policy)

    expected = _load(ckpt / "full.pt")
    trainable = {k: v for k, v in policy.state_dict().items() if not k.startswith("vggt.")}
    _assert_same(trainable, {k: expected[k] for k in trainable})
    _assert_same({k: policy.state_dict()[k] for k in frozen}, frozen)  # not in the checkpoint
    for p in params:
        state = opt.state[p]
        assert int(state["step"]) == 3 and state["exp_avg"].shape == p.shape
    scaler = strategy.build_scaler(enabled=False)
    train_step(strategy, policy, opt, scaler, params, 3, 2, 0, "bf16")
    assert all(torch.isfinite(p).all() for p in params)


def test_weights_only_load_from_dcp(fsdp2_runs: Path) -> None:
    ckpt = fsdp2_runs / "run" / "iter_3"
    policy = ToyPolicy()
    missing = load_model_weights(ckpt / DCP_DIR, policy)
    assert missing == ["vggt.bias", "vggt.weight"]  # frozen: not saved by default
    expected = _load(ckpt / "full.pt")
    _assert_same(
        {k: policy.state_dict()[k] for k in expected if not k.startswith("vggt.")},
        {k: v for k, v in expected.items() if not k.startswith("vggt.")},
    )


def test_shard_units_are_outermost_trainable_blocks() -> None:
    assert shard_units(ToyPolicy()) == ["fusion.layers.0", "fusion.layers.1", "fusion.layers.2"]
    frozen = ToyPolicy()
    frozen.fusion.layers[1].requires_grad_(False)
    assert shard_units(frozen) == ["fusion.layers.0", "fusion.layers.2"]


def test_toy_batch_is_deterministic() -> None:
    a, b = make_batch(3, 1, 0), make_batch(3, 1, 0)
    assert torch.equal(a["x"], b["x"]) and not torch.equal(a["x"], make_batch(3, 1, 1)["x"])
