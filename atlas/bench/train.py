"""Training throughput: optimizer steps/s and samples/s, data loading separated from compute.

    python -m atlas.bench.train --quick          # the debug model on the CPU, a few steps
    python -m atlas.bench.train                  # + the VGGT-1B-size backbone when a GPU is present
    python -m atlas.bench.train --device cuda --cases vggt_1b --batch-size 8

Each case builds the real `Trainer` (policy, AdamW, precision, DDP-free single process) on the
synthetic dataset in a temporary directory and measures three things:

    data      the DataLoader alone: seconds per batch (decode, resize, normalize, collate)
    compute   `Trainer.train_step` on one batch held in memory: the step without any data wait
    e2e       `Trainer.train_step` fed by the DataLoader: what training achieves, with the fraction
              of the time spent waiting for data

Weights are random (VGGT-1B's architecture without its checkpoint; MiniLM as the language
encoder, so nothing is downloaded). Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from atlas.config import AtlasConfig, load_config
from atlas.distributed.env import DistInfo

DEBUG_YAML = Path(__file__).resolve().parents[1] / "configs" / "debug.yaml"

# case -> overrides on top of debug.yaml
CASES: dict[str, list[str]] = {
    "debug": [],
    "vggt_1b": [
        "model.vggt.preset=vggt_1b",
        "model.fusion.dim=512",
        "model.fusion.depth=4",
        "model.fusion.num_heads=8",
        "model.geometry.tokens_per_frame=16",
        "model.action_head.chunk_size=8",
        "model.action_head.hidden_dim=512",
        "data.image_size=224",
        "data.batch_size=8",
        "data.synthetic={tasks: 2, demos: 4, steps: 32, image_size: 128}",
        "training.mixed_precision=auto",
        "training.cpu_threads=null",
    ],
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rate(fn: Callable[[], int], n: int, device: torch.device) -> tuple[float, int]:
    """Seconds for `n` calls of fn (after synchronizing) and the samples they returned."""
    _sync(device)
    start, samples = time.perf_counter(), 0
    for _ in range(n):
        samples += fn()
    _sync(device)
    return time.perf_counter() - start, samples


def bench_case(name: str, device: torch.device, steps: int, warmup: int, extra: list[str]) -> dict:
    """Measure one configuration; returns its row of results."""
    from atlas.training.trainer import Trainer

    with tempfile.TemporaryDirectory(prefix="atlas-bench-") as tmp:
        overrides = [
            f"data.paths=[{tmp}/data]",
            f"checkpoint.save_dir={tmp}/run",
            "logging.tensorboard=false",
            "logging.progress=false",
            *CASES[name],
            *extra,
        ]
        cfg: AtlasConfig = load_config(DEBUG_YAML, overrides)
        trainer = Trainer(cfg, DistInfo(device=device), progress=False)
        try:
            return _measure(name, cfg, trainer, device, steps, warmup)
        finally:
            trainer.close()


def _measure(
    name: str, cfg: AtlasConfig, trainer: Any, device: torch.device, steps: int, warmup: int
) -> dict[str, Any]:
    loader = trainer.data.train_loader
    trainer.data.sampler.set_epoch(0)
    batches: Iterator[dict[str, Any]] = itertools.cycle(loader)  # data: loader alone
    data_s, data_n = _rate(lambda: next(batches)["actions"].shape[0], steps, device)

    batch = next(iter(loader))
    held = itertools.repeat(batch)  # compute: the same in-memory batch every micro-step
    accum = cfg.training.gradient_accumulation_steps
    trainer.model.train()
    _rate(lambda: trainer.train_step(held, accum), warmup, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    compute_s, compute_n = _rate(lambda: trainer.train_step(held, accum), steps, device)

    stream = itertools.cycle(loader)  # end to end: the loader feeds the step
    trainer.meter.reset()
    e2e_s, e2e_n = _rate(lambda: trainer.train_step(stream, accum), steps, device)
    wait = trainer.meter.data_wait
    policy = trainer.policy
    return {
        "case": name,
        "device": str(device),
        "precision": trainer.precision.name,
        "batch_size": cfg.data.batch_size,
        "image_size": cfg.data.image_size,
        "trainable_params": sum(p.numel() for p in policy.parameters() if p.requires_grad),
        "total_params": sum(p.numel() for p in policy.parameters()),
        "data_s_per_batch": data_s / steps,
        "data_samples_per_s": data_n / data_s,
        "compute_steps_per_s": steps / compute_s,
        "compute_samples_per_s": compute_n / compute_s,
        "e2e_steps_per_s": steps / e2e_s,
        "e2e_samples_per_s": e2e_n / e2e_s,
        "e2e_data_wait_frac": wait / e2e_s,
        "peak_mem_gib": torch.cuda.max_memory_allocated(device) / 2**30
        if device.type == "cuda"
        else None,
    }


def format_table(rows: list[dict[str, Any]]) -> str:
    head = (
        f"{'case':<9} {'device':<7} {'prec':<5} {'batch':>5} {'data s/batch':>12} "
        f"{'compute step/s':>14} {'compute smp/s':>13} {'e2e step/s':>10} {'e2e smp/s':>9} "
        f"{'wait':>5} {'peak GiB':>8}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        mem = f"{r['peak_mem_gib']:8.2f}" if r["peak_mem_gib"] is not None else f"{'-':>8}"
        lines.append(
            f"{r['case']:<9} {r['device']:<7} {r['precision']:<5} {r['batch_size']:>5} "
            f"{r['data_s_per_batch']:12.4f} {r['compute_steps_per_s']:14.4g} "
            f"{r['compute_samples_per_s']:13.4g} {r['e2e_steps_per_s']:10.4g} "
            f"{r['e2e_samples_per_s']:9.4g} {100 * r['e2e_data_wait_frac']:4.0f}% {mem}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m atlas.bench.train", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="few steps, debug model only")
    parser.add_argument("--device", help="cpu | cuda (default: cuda when available)")
    parser.add_argument("--cases", help=f"comma-separated subset of {','.join(CASES)}")
    parser.add_argument("--steps", type=int, help="measured steps per phase (default 30; quick 8)")
    parser.add_argument("--batch-size", type=int, help="override data.batch_size")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.WARNING)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    steps = args.steps or (8 if args.quick else 30)
    warmup = 2 if args.quick else 5
    if args.cases:
        cases = args.cases.split(",")
    else:  # the 1B backbone only where it is practical: on a GPU, and not in --quick
        cases = ["debug"] + (["vggt_1b"] if device.type == "cuda" and not args.quick else [])
    extra = [f"data.batch_size={args.batch_size}"] if args.batch_size else []
    rows = [bench_case(name, device, steps, warmup, extra) for name in cases]
    sys.stdout.write(format_table(rows) + "\n")
    record = {"bench": "train", "torch": torch.__version__, "rows": rows}
    sys.stdout.write(json.dumps(record) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
