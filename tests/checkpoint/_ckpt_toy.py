"""A toy training loop around the checkpoint component, independent of the real trainer.

Dropout, per-sample "augmentation" seeded from (index, epoch), gradient accumulation with a
partial last window per epoch, AdamW + LambdaLR, a frozen sub-module: everything that makes exact
resume hard, in a model that trains in milliseconds. `install_kill` makes a (forked) process
SIGKILL itself inside a chosen step of the checkpoint protocol.
"""

from __future__ import annotations

import functools
import os
import signal
from pathlib import Path

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import DataLoader, Dataset

from atlas.checkpoint.manager import CheckpointManager, SaveReason, load_weights, resolve_resume
from atlas.checkpoint.state import RNGState, TrainProgress
from atlas.config.schema import AtlasConfig
from atlas.distributed.env import DistInfo
from atlas.distributed.sampler import ResumableSampler
from atlas.training.optim import lr_at

NUM_SAMPLES = 44  # 11 micro-batches of 4: the last accumulation window of an epoch is partial


class ToyData(Dataset):
    def __init__(self, n: int = NUM_SAMPLES) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 4, generator=g)
        self.y = torch.randn(n, 2, generator=g)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, item: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        index, epoch = item
        aug = torch.Generator().manual_seed(1000 * epoch + index)  # "augmentation"
        return self.x[index] + 0.1 * torch.randn(4, generator=aug), self.y[index]


class ToyModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Linear(4, 16)  # frozen, like the pretrained VGGT
        self.head = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 2))
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))
        self.backbone.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.head(self.backbone(x))


def toy_config(save_dir: str | Path, **checkpoint: object) -> AtlasConfig:
    cfg = AtlasConfig()
    cfg.data.batch_size = 4
    cfg.training.gradient_accumulation_steps = 2
    cfg.training.warmup_steps = 3
    cfg.checkpoint.save_dir = str(save_dir)
    cfg.checkpoint.save_interval = 2
    cfg.checkpoint.max_keep_ckpts = 2
    cfg.checkpoint.resume = "auto"
    for key, value in checkpoint.items():
        setattr(cfg.checkpoint, key, value)
    return cfg


def build(cfg: AtlasConfig, dist: DistInfo, total: int) -> tuple[ToyModel, dict]:
    torch.manual_seed(0)
    model = ToyModel()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    sched = LambdaLR(opt, functools.partial(lr_at, peak=1.0, warmup=3, total=total))
    sampler = ResumableSampler(NUM_SAMPLES, dist, shuffle=True, seed=0)
    objects = {"optimizer": opt, "scheduler": sched, "sampler": sampler, "rng": RNGState()}
    return model, objects


def train(
    cfg: AtlasConfig,
    total: int,
    stop_at: int | None = None,
    workers: int = 0,
    dist: DistInfo | None = None,
) -> tuple[ToyModel, TrainProgress]:
    """Train to `total` optimizer steps (resuming per cfg.checkpoint); stop early at `stop_at`."""
    dist = dist or DistInfo()
    model, objects = build(cfg, dist, total)
    progress = TrainProgress()
    manager = CheckpointManager(cfg, dist, model, {**objects, "progress": progress})
    path = resolve_resume(cfg, dist)
    if path is not None:
        manager.load(path, verified=True)
    elif cfg.checkpoint.load_from:
        load_weights(cfg.checkpoint.load_from, model, dist)
    opt, sched, sampler = objects["optimizer"], objects["scheduler"], objects["sampler"]
    b, accum = cfg.data.batch_size, cfg.training.gradient_accumulation_steps
    # A private generator: creating an iterator must not draw from the global RNG (dropout's).
    loader = DataLoader(
        ToyData(), b, sampler=sampler, num_workers=workers, generator=torch.Generator()
    )
    per_epoch = -(-sampler.num_samples_per_rank // b)
    model.train()
    while progress.step < total:
        sampler.set_epoch(progress.epoch, progress.batch_in_epoch, b)
        for x, y in loader:
            loss = ((model(x) - y) ** 2).mean() / accum
            loss.backward()
            progress.batch_in_epoch += 1
            if progress.batch_in_epoch % accum and progress.batch_in_epoch < per_epoch:
                continue
            opt.step()
            sched.step()
            opt.zero_grad()
            progress.step += 1
            progress.samples_seen += b * dist.world_size * accum
            manager.save(progress.step, SaveReason.INTERVAL)
            if progress.step in (stop_at, total):
                return model, progress
        progress.epoch += 1
        progress.batch_in_epoch = 0
    return model, progress


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def install_kill(spec: str) -> None:
    """`FUNC@STEP`: SIGKILL this process when layout.FUNC runs during the save of STEP."""
    from atlas.checkpoint import layout

    func, step = spec.split("@")
    original = getattr(layout, func)

    def killer(*args: object, **kwargs: object) -> object:
        if any(f"iter_{int(step):08d}" in str(a) for a in args):
            os.kill(os.getpid(), signal.SIGKILL)
        return original(*args, **kwargs)

    setattr(layout, func, killer)
