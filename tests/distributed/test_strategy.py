"""The strategy registry and the hooks that need no process group (fast, in-process)."""

from __future__ import annotations

import pytest
import torch
from _toy import ToyPolicy, make_batch, toy_config, train_step

from atlas.distributed.env import DistInfo
from atlas.distributed.fsdp2 import FSDP2Strategy, mixed_precision
from atlas.distributed.strategy import (
    STRATEGIES,
    DDPStrategy,
    available_strategies,
    build_strategy,
    clip_grad_norm,
)


def test_registry_lists_every_schema_choice() -> None:
    from typing import get_args, get_type_hints

    from atlas.config.schema import TrainingConfig

    choices = get_args(get_type_hints(TrainingConfig)["strategy"])
    assert sorted(choices) == available_strategies() == ["ddp", "deepspeed", "fsdp2"]


def test_build_strategy_by_name() -> None:
    assert isinstance(build_strategy(toy_config("ddp", "fp32"), DistInfo()), DDPStrategy)
    assert isinstance(build_strategy(toy_config("fsdp2", "fp32"), DistInfo()), FSDP2Strategy)
    assert STRATEGIES["fsdp2"].owns_model_state and not STRATEGIES["ddp"].owns_model_state
    cfg = toy_config("ddp", "fp32")
    cfg.training.strategy = "zero9"  # type: ignore[assignment]
    with pytest.raises(ValueError, match="available: ddp, deepspeed, fsdp2"):
        build_strategy(cfg, DistInfo())


def test_mixed_precision_follows_the_run_precision() -> None:
    bf16 = mixed_precision("bf16")
    assert bf16.param_dtype == torch.bfloat16 and bf16.reduce_dtype == torch.float32
    assert bf16.output_dtype == torch.float32  # code between blocks keeps its fp32 dtypes
    assert mixed_precision("fp16").param_dtype == torch.float16
    assert mixed_precision("fp32").param_dtype is None


def test_single_process_strategies_train_like_a_plain_loop() -> None:
    """World of one: ddp and fsdp2 leave the policy unwrapped; the hooks are a plain step."""
    results = []
    for name in ("ddp", "fsdp2"):
        cfg = toy_config(name, "fp32")
        strategy = build_strategy(cfg, DistInfo(), "fp32")
        torch.manual_seed(0)
        policy = ToyPolicy()
        model = strategy.wrap(policy)
        assert model is policy
        params = [p for p in policy.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=1e-2)
        model = strategy.prepare(model, opt)
        with strategy.gathered(model):
            pass
        for step in range(2):
            train_step(
                strategy, model, opt, strategy.build_scaler(False), params, step, 2, 0, "fp32"
            )
        results.append(policy.state_dict())
    torch.manual_seed(0)
    plain = ToyPolicy()
    params = [p for p in plain.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-2)
    for step in range(2):
        opt.zero_grad()
        for i in range(2):
            torch.manual_seed(1_000 * step + 10 * i)
            loss, _ = plain(make_batch(step, i, 0))
            (loss / 2).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
    for state in results:
        assert all(state[k].equal(v) for k, v in plain.state_dict().items())


def test_clip_grad_norm_measures_without_clipping() -> None:
    p = torch.nn.Parameter(torch.zeros(3))
    p.grad = torch.tensor([3.0, 4.0, 0.0])
    assert clip_grad_norm([p], None).item() == pytest.approx(5.0)
    assert p.grad.tolist() == [3.0, 4.0, 0.0]
    clip_grad_norm([p], 1.0)
    assert p.grad.norm().item() == pytest.approx(1.0, rel=1e-5)
