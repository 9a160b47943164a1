"""The LR schedule (exact values), world-size scaling, AdamW groups and the precision policy."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from atlas.config import AtlasConfig, load_config
from atlas.runtime import resolve_precision
from atlas.training.optim import (
    build_optimizer,
    build_scheduler,
    current_lrs,
    lr_at,
)

CPU = torch.device("cpu")


# --------------------------------------------------------------------------------- lr_at


@pytest.mark.parametrize(
    ("step", "expected"),
    [(0, 0.0), (250, 2.5e-5), (500, 5e-5), (999, 9.99e-5), (1000, 1e-4)],
)
def test_warmup_matches_the_documents_table(step: int, expected: float) -> None:
    # 000_*.txt: warmup_steps 1000, peak 1e-4 -> 0, 2.5e-5, 5e-5, 1e-4
    assert lr_at(step, 1e-4, warmup=1000, total=11000) == pytest.approx(expected, rel=1e-12)


def test_cosine_phase_exact_values() -> None:
    peak, warmup, total = 1e-3, 100, 1100
    assert lr_at(100, peak, warmup, total) == pytest.approx(1e-3, rel=1e-12)
    assert lr_at(600, peak, warmup, total) == pytest.approx(5e-4, rel=1e-12)  # half way: cos = 0
    quarter = 0.5 * (1 + math.cos(math.pi / 4)) * peak
    assert lr_at(350, peak, warmup, total) == pytest.approx(quarter, rel=1e-12)
    assert lr_at(1100, peak, warmup, total) == pytest.approx(0.0, abs=1e-18)
    assert lr_at(5000, peak, warmup, total) == pytest.approx(0.0, abs=1e-18)  # past the end


def test_min_lr_ratio_is_the_floor() -> None:
    peak, warmup, total, ratio = 1e-3, 100, 1100, 0.1
    assert lr_at(600, peak, warmup, total, ratio) == pytest.approx(5.5e-4, rel=1e-12)
    assert lr_at(1100, peak, warmup, total, ratio) == pytest.approx(1e-4, rel=1e-12)
    assert lr_at(9999, peak, warmup, total, ratio) == pytest.approx(1e-4, rel=1e-12)
    assert min(lr_at(s, peak, warmup, total, ratio) for s in range(100, 2000)) >= 1e-4 - 1e-15


def test_no_warmup_starts_at_peak() -> None:
    assert lr_at(0, 2e-4, warmup=0, total=10) == pytest.approx(2e-4)
    assert lr_at(10, 2e-4, warmup=0, total=10, min_ratio=0.5) == pytest.approx(1e-4)


# ----------------------------------------------------------------------- scaling and groups


class TwoModules(nn.Module):
    """A stand-in policy with the contract's param_groups (module LRs, no-decay group)."""

    def __init__(self) -> None:
        super().__init__()
        self.fusion = nn.Linear(4, 4)
        self.action_head = nn.Linear(4, 2)
        self.frozen = nn.Linear(4, 4).requires_grad_(False)

    def param_groups(self, lr: dict[str, float], weight_decay: float) -> list[dict]:
        return [
            {"name": "fusion", "params": [self.fusion.weight], "lr": lr["fusion"]},
            {"name": "fusion", "params": [self.fusion.bias], "lr": lr["fusion"], "weight_decay": 0},
            {
                "name": "action_head",
                "params": list(self.action_head.parameters()),
                "lr": lr["action_head"],
            },
        ]


def _cfg(**training) -> AtlasConfig:
    return load_config(None, [f"training.{k}={v}" for k, v in training.items()])


@pytest.mark.parametrize(
    ("rule", "world", "expected"),
    [
        ("linear", 8, 8e-4),  # the documents: 1e-4 on 8 GPUs -> 8e-4
        ("linear", 1, 1e-4),
        ("sqrt", 8, 1e-4 * math.sqrt(8)),  # ~2.83e-4
        ("sqrt", 4, 2e-4),
        ("none", 8, 1e-4),
    ],
)
def test_lr_scaling_rules(rule: str, world: int, expected: float) -> None:
    cfg = _cfg(learning_rate=1e-4, lr_scaling=rule)
    opt = build_optimizer(TwoModules(), cfg, world_size=world, device=CPU)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([expected] * 3, rel=1e-12)


def test_optimizer_holds_trainable_parameters_only() -> None:
    model = TwoModules()
    opt = build_optimizer(model, _cfg(), world_size=1, device=CPU)
    held = {id(p) for g in opt.param_groups for p in g["params"]}
    assert held == {id(p) for p in model.parameters() if p.requires_grad}
    assert not any(id(p) in held for p in model.frozen.parameters())
    assert opt.param_groups[1]["weight_decay"] == 0  # the group's own value wins
    assert opt.defaults["foreach"] is True  # CPU: foreach (fused is for CUDA)


def test_scheduler_applies_lr_at_to_every_group_peak() -> None:
    cfg = load_config(
        None,
        [
            "training.learning_rate=1e-3",
            "training.module_lr={fusion: 1e-4}",
            "training.warmup_steps=10",
            "training.min_lr_ratio=0.1",
            "training.lr_scaling=linear",
        ],
    )
    model = TwoModules()
    opt = build_optimizer(model, cfg, world_size=2, device=CPU)
    sched = build_scheduler(opt, cfg, total_steps=50)
    peaks = {"fusion": 2e-4, "action_head": 2e-3}
    for step in range(60):
        for name, lr in current_lrs(opt).items():
            expected = lr_at(step, peaks[name.split("/")[1]], 10, 50, 0.1)
            assert lr == pytest.approx(expected, rel=1e-12, abs=1e-20), (step, name)
        opt.step()
        sched.step()


def test_scheduler_state_round_trip_resumes_the_same_lr() -> None:
    cfg = _cfg(learning_rate=1e-3, warmup_steps=5)
    opt = build_optimizer(TwoModules(), cfg, 1, CPU)
    sched = build_scheduler(opt, cfg, total_steps=40)
    for _ in range(17):
        opt.step()
        sched.step()
    state = sched.state_dict()
    opt2 = build_optimizer(TwoModules(), cfg, 1, CPU)
    sched2 = build_scheduler(opt2, cfg, total_steps=40)
    sched2.load_state_dict(state)
    opt2.load_state_dict(opt.state_dict())
    assert sched2.last_epoch == 17
    assert current_lrs(opt2) == current_lrs(opt)
    assert current_lrs(opt)["lr/action_head"] == pytest.approx(lr_at(17, 1e-3, 5, 40))


def test_all_frozen_policy_is_refused() -> None:
    model = TwoModules().requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        build_optimizer(model, _cfg(), 1, CPU)


# ------------------------------------------------------------------------------- precision


def test_precision_auto_is_fp32_on_cpu_and_explicit_modes_hold() -> None:
    auto = resolve_precision("auto", CPU)
    assert auto.name == "fp32" and not auto.needs_scaler
    assert resolve_precision("bf16", CPU).dtype is torch.bfloat16
    fp16 = resolve_precision("fp16", CPU)
    assert fp16.needs_scaler
    with resolve_precision("bf16", CPU).autocast():
        y = nn.Linear(4, 4)(torch.randn(2, 4))
    assert y.dtype is torch.bfloat16
    with pytest.raises(ValueError, match="unknown mode"):
        resolve_precision("fp8", CPU)
