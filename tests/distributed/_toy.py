"""A toy policy and training loop driven through the `Strategy` hooks, for torchrun-based tests.

The toy has what makes sharded resume hard: blocks in a ModuleList (FSDP2 units), a frozen
module (not sharded), dropout, AdamW + LambdaLR, gradient accumulation, bf16 autocast. Data and
dropout are seeded from (step, micro-batch, rank), so a resumed run needs no RNG state.

    torchrun --nproc_per_node 2 _toy.py --run-dir D --steps 6 --save-at 3 [--kill-at 4]
    torchrun --nproc_per_node 2 _toy.py --run-dir D --steps 6 --resume D/iter_3 \
        --also-fresh R

Rank 0 writes `<run-dir>/final.pt` (the consolidated weights) at the end.
"""

from __future__ import annotations

import argparse
import functools
import os
import signal
import sys
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim.lr_scheduler import LambdaLR

from atlas.config.schema import AtlasConfig
from atlas.distributed.env import DistInfo, barrier, init_distributed, teardown_distributed
from atlas.distributed.strategy import Strategy, build_strategy
from atlas.training.optim import lr_at

DIM = 16


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(DIM)
        self.fc = nn.Linear(DIM, DIM)
        self.drop = nn.Dropout(0.1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.drop(torch.nn.functional.gelu(self.fc(self.norm(x))))


class Fusion(nn.Module):
    def __init__(self, depth: int = 3) -> None:
        super().__init__()
        self.layers = nn.ModuleList(Block() for _ in range(depth))

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class ToyPolicy(nn.Module):
    """vggt (frozen) -> fusion (3 blocks) -> action_head; forward(batch) -> (loss, metrics)."""

    def __init__(self) -> None:
        super().__init__()
        self.vggt = nn.Linear(8, DIM)
        self.vggt.requires_grad_(False)
        self.fusion = Fusion()
        self.action_head = nn.Linear(DIM, 7)

    def predict_chunk(self, batch: dict[str, Tensor]) -> Tensor:
        return self.action_head(self.fusion(self.vggt(batch["x"])))

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        pred = self.predict_chunk(batch).float()
        loss = torch.nn.functional.smooth_l1_loss(pred, batch["y"])
        return loss, {"loss": loss.detach()}


def make_batch(step: int, micro: int, rank: int, size: int = 4) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(10_000 * step + 100 * micro + rank)
    return {"x": torch.randn(size, 8, generator=g), "y": torch.randn(size, 7, generator=g)}


def toy_config(strategy: str, precision: str, zero3: bool = False) -> AtlasConfig:
    cfg = AtlasConfig()
    cfg.training.strategy = strategy  # type: ignore[assignment]
    cfg.training.mixed_precision = precision  # type: ignore[assignment]
    cfg.training.gradient_accumulation_steps = 2
    cfg.training.fsdp.reshard_after_forward = zero3
    cfg.training.fsdp.activation_checkpointing = zero3
    cfg.data.batch_size = 4
    return cfg


def build(cfg: AtlasConfig, strategy: Strategy, total: int) -> tuple[Any, ...]:
    """Policy (same init on every rank), wrapped; AdamW + warmup/cosine; the prepared model."""
    torch.manual_seed(0)
    policy = ToyPolicy()
    model = strategy.wrap(policy)
    params = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.01, foreach=True)
    fn = functools.partial(lr_at, peak=1.0, warmup=2, total=total, min_ratio=0.1)
    scheduler = LambdaLR(optimizer, fn)
    model = strategy.prepare(model, optimizer)
    return policy, model, optimizer, scheduler, params


def train_step(
    strategy: Strategy,
    model: nn.Module,
    opt: Any,
    scaler: Any,
    params: list,
    step: int,
    accum: int,
    rank: int,
    precision: str,
) -> None:
    strategy.zero_grad(model, opt)
    for i in range(accum):
        torch.manual_seed(1_000 * step + 10 * i + rank)  # dropout masks
        with strategy.micro_batch(model, last=i == accum - 1):
            dtype = torch.bfloat16 if precision == "bf16" else torch.float32
            with torch.autocast("cpu", dtype=dtype, enabled=precision == "bf16"):
                loss, _ = model(make_batch(step, i, rank))
            strategy.backward(model, loss / accum, scaler)
    strategy.optimizer_step(model, opt, scaler, params, max_norm=1.0)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--strategy", default="fsdp2")
    p.add_argument("--precision", default="fp32")
    p.add_argument("--zero3", action="store_true", help="reshard after forward + act. ckpt")
    p.add_argument("--run-dir", type=Path, required=True)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--save-at", type=int, default=0)
    p.add_argument("--kill-at", type=int, default=0, help="SIGKILL rank 0 before this step")
    p.add_argument("--resume", type=Path)
    p.add_argument("--also-fresh", type=Path, help="then train from scratch into this dir")
    a = p.parse_args()
    dist = init_distributed(device="cpu")
    try:
        cfg = toy_config(a.strategy, a.precision, a.zero3)
        run(a, cfg, dist, a.run_dir, a.resume)
        if a.also_fresh is not None:  # the uninterrupted reference, in the same processes
            run(a, cfg, dist, a.also_fresh, None)
    finally:
        teardown_distributed()
    return 0


def run(
    a: argparse.Namespace, cfg: AtlasConfig, dist: DistInfo, run_dir: Path, resume: Path | None
) -> None:
    """Train steps [start, a.steps) and write run_dir/final.pt (rank 0)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    rank = dist.rank
    strategy = build_strategy(cfg, dist, a.precision)
    policy, model, opt, sched, params = build(cfg, strategy, a.steps)
    scaler = strategy.build_scaler(enabled=False)
    start = 0
    if resume is not None:
        strategy.load_state(resume, model)
        sched.load_state_dict(torch.load(resume / "scheduler.pt", weights_only=True))
        start = sched.last_epoch
    model.train()
    for step in range(start, a.steps):
        if step == a.kill_at and a.kill_at and rank == 0:
            os.kill(os.getpid(), signal.SIGKILL)  # a crash mid-run, after the save
        train_step(strategy, model, opt, scaler, params, step, 2, rank, a.precision)
        sched.step()
        if step + 1 == a.save_at:
            save(strategy, run_dir / f"iter_{step + 1}", model, opt, sched, rank)
    # Validation-like: ranks run different numbers of forwards (FSDP2 must not hang here).
    with strategy.gathered(model), torch.no_grad():
        for i in range(2 - rank):
            policy.predict_chunk(make_batch(99, i, rank))
    full = strategy.export_state_dict(model)
    if rank == 0:
        write_full(strategy, model, full, run_dir / "final.pt")
    barrier()


def save(
    strategy: Strategy, directory: Path, model: nn.Module, opt: Any, sched: Any, rank: int
) -> None:
    if rank == 0:
        directory.mkdir(parents=True, exist_ok=True)
    barrier()
    strategy.save_state(directory, model)
    full = strategy.export_state_dict(model)  # collective under FSDP2
    if rank == 0:
        torch.save(sched.state_dict(), directory / "scheduler.pt")
        write_full(strategy, model, full, directory / "full.pt")
    barrier()


def write_full(strategy: Strategy, model: nn.Module, full: Any, path: Path) -> None:
    """The consolidated weights (rank 0): the strategy's export, or the policy's own state."""
    policy = getattr(model, "module", model)  # DeepSpeed's engine holds the policy as .module
    full = full if full is not None else policy.state_dict()
    torch.save({k: v.detach().cpu().clone() for k, v in full.items()}, path)


if __name__ == "__main__":
    sys.exit(main())
