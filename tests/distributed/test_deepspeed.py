"""DeepSpeed ZeRO-2 on CPU (DS_ACCELERATOR=cpu, gloo): trains, writes its native layout, resumes.

Skipped when `deepspeed` is not installed (it is the optional extra `atlas-vla[deepspeed]`). The
first run on a machine JIT-compiles DeepSpeed's CPU shared-memory op (about a minute, cached in
~/.cache/torch_extensions afterwards).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from conftest import SAVE_AT, kill_and_resume
from torch import nn

from atlas.distributed.deepspeed_engine import (
    MODEL_STATES,
    OPTIM_GLOB,
    deepspeed_config,
    load_model_weights,
)

os.environ.setdefault("DS_ACCELERATOR", "cpu")
pytest.importorskip("deepspeed", reason="deepspeed is not installed (pip install deepspeed)")


@pytest.fixture(scope="module")
def ds_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return kill_and_resume(
        tmp_path_factory.mktemp("deepspeed"), "deepspeed", ["--precision", "bf16"]
    )


def _load(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)


def test_native_zero2_layout(ds_runs: Path) -> None:
    ckpt = ds_runs / "run" / f"iter_{SAVE_AT}"
    assert (ckpt / MODEL_STATES).is_file()
    shards = sorted(p.name for p in ckpt.glob(OPTIM_GLOB))
    assert shards == [
        "zero_pp_rank_0_mp_rank_00_optim_states.pt",
        "zero_pp_rank_1_mp_rank_00_optim_states.pt",
    ]
    assert not (ds_runs / "run" / "latest").exists()  # last_checkpoint is the only pointer


def test_killed_and_resumed_matches_uninterrupted_bitwise(ds_runs: Path) -> None:
    resumed, reference = _load(ds_runs / "run" / "final.pt"), _load(ds_runs / "ref" / "final.pt")
    assert sorted(resumed) == sorted(reference)
    assert all(resumed[k].equal(reference[k]) for k in resumed)
    start = _load(ds_runs / "run" / f"iter_{SAVE_AT}" / "full.pt")
    assert any(not start[k].equal(resumed[k]) for k in start)  # it did train after the resume


def test_weights_only_load_without_the_engine(ds_runs: Path) -> None:
    from _toy import ToyPolicy

    ckpt = ds_runs / "run" / f"iter_{SAVE_AT}"
    policy = ToyPolicy()
    assert load_model_weights(ckpt, policy) == ["vggt.bias", "vggt.weight"]  # frozen: not saved
    expected = _load(ckpt / "full.pt")
    assert all(policy.state_dict()[k].equal(v) for k, v in expected.items() if "vggt" not in k)


def test_config_comes_from_the_atlas_config() -> None:
    from _toy import toy_config

    cfg = toy_config("deepspeed", "fp32")
    ds = deepspeed_config(cfg, world_size=4, device=torch.device("cpu"))
    assert ds["train_batch_size"] == 4 * 4 * 2 == cfg.effective_batch_size(4)
    assert ds["zero_optimization"]["stage"] == 2
    assert ds["gradient_clipping"] == cfg.training.max_grad_norm
    assert "bf16" not in ds and "fp16" not in ds  # fp32 weights; autocast picks the dtype
    assert "torch_autocast" not in ds
    bf16 = deepspeed_config(cfg, 4, torch.device("cpu"), precision="bf16")["torch_autocast"]
    assert bf16 == {"enabled": True, "dtype": "bfloat16", "lower_precision_safe_modules": []}


class _Probe(nn.Module):
    """Records the dtype its linear layer computes in."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.seen: list[torch.dtype] = []

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        out = self.lin(batch["x"])
        self.seen.append(out.dtype)
        return out.float().pow(2).mean(), {}


def test_engine_keeps_the_trainers_bf16_autocast() -> None:
    """Without `torch_autocast` the engine turns an outer autocast OFF (fp32 compute); with the
    config built here it computes in bf16 while the weights stay fp32. Also: a world of one."""
    from _toy import toy_config

    from atlas.distributed.deepspeed_engine import DeepSpeedStrategy
    from atlas.distributed.env import DistInfo

    strategy = DeepSpeedStrategy(toy_config("deepspeed", "bf16"), DistInfo(), "bf16")
    probe = _Probe()
    opt = torch.optim.AdamW(probe.parameters(), lr=1e-3)
    try:
        engine = strategy.prepare(strategy.wrap(probe), opt)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss, _ = engine({"x": torch.randn(2, 4)})
        with strategy.micro_batch(engine, last=True):
            strategy.backward(engine, loss, strategy.build_scaler(enabled=False))
        strategy.optimizer_step(engine, opt, strategy.build_scaler(enabled=False), [], 1.0)
    finally:
        dist.destroy_process_group()
    assert probe.seen == [torch.bfloat16]
    assert probe.lin.weight.dtype == torch.float32
