"""Training from the feature cache vs online: train-step throughput, build throughput, bytes.

    python -m atlas.bench.cache --quick                  # CPU, the debug preset (CI)
    python -m atlas.bench.cache --device cuda --full     # VGGT-1B + a LLaMA-2-7B-size model

Same model both ways: the cached policy starts from the online policy's trainable weights, and
the store is built from the same (seeded) backbones. A step is what the trainer does per
micro-batch: load the batch (DataLoader, the config's workers), forward under the run's autocast,
backward, AdamW step. Online pays image loading + VGGT (+ the language model's cached lookups);
cached reads memory-mapped features and never builds the backbones.

Peak memory is CUDA's max_memory_allocated during the phase (resident weights included); the
CPU has no per-phase figure, so it is reported on CUDA only. --full uses random weights: a random
LLaMA-2-7B-size model (transformers' LlamaConfig defaults, bf16) with the MiniLM tokenizer stands
in for the real checkpoint, which the throughput does not depend on. Prints a table, then one
JSON line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from atlas.config import load_config
from atlas.config.schema import AtlasConfig


def bench_config(args: argparse.Namespace, root: Path, cached: bool) -> AtlasConfig:
    """debug.yaml on a synthetic set under `root`; --full swaps in the documented model sizes."""
    from atlas.config.arguments import packaged_config

    synth = "{tasks: 2, demos: 4, steps: 24, image_size: 64}" if args.quick else None
    overrides = [
        f"data.paths=[{root / 'data' / 'synth'}]",
        f"checkpoint.save_dir={root / 'run'}",
        f"data.cache_dir={root / 'cache'}",
        f"data.cache_dtype={args.store_dtype}",
        f"data.use_feature_cache={str(cached).lower()}",
        "model.geometry.keypoints=0",  # reads pixels, which the cache does not hold: both ways off
        "model.action_head.use_keypoints=false",
        f"data.num_workers={args.workers}",
        "training.mixed_precision=auto",
    ]
    if synth:
        overrides.append(f"data.synthetic={synth}")
    if args.size:
        overrides.append(f"data.image_size={args.size}")
    if args.full:
        overrides += [
            "model.vggt.preset=vggt_1b",
            "model.vggt.layers=[-1]",
            "model.language_encoder.pooling=last_token",
            "model.geometry.tokens_per_frame=16",
            "model.fusion={dim: 512, depth: 4, num_heads: 8, dropout: 0.1}",
            "model.action_head={chunk_size: 8, hidden_dim: 512, use_proprio: true}",
            "data.cameras=[agentview_rgb, eye_in_hand_rgb]",
            "data.batch_size=8",
            "data.pin_memory=true",  # debug.yaml's CPU setting off: asynchronous copies
            "data.synthetic={tasks: 4, demos: 8, steps: 32, image_size: 128}",
        ]
    return load_config(packaged_config("debug.yaml"), [*overrides, *args.set])


@contextlib.contextmanager
def random_llama(size: str) -> Iterator[None]:
    """Make the language model a random LLaMA (7b: Llama-2-7B's shape), MiniLM's tokenizer."""
    from transformers import LlamaConfig

    import atlas.models.language as language
    import atlas.models.policy as policy_module

    small = dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
    )
    config = LlamaConfig() if size == "7b" else LlamaConfig(**small)

    def build(path: Path, dtype: torch.dtype, meta: bool = False) -> tuple[Any, Any]:
        from transformers import AutoTokenizer, LlamaModel

        device = "cuda" if torch.cuda.is_available() else "cpu"
        default = torch.get_default_dtype()
        torch.set_default_dtype(dtype)  # no fp32 copy of 7B parameters on the way
        try:
            with torch.device("meta" if meta else device):
                model = LlamaModel(config)
        finally:
            torch.set_default_dtype(default)
        tok = AutoTokenizer.from_pretrained(path)  # the configured folder's (MiniLM) tokenizer
        tok.model_input_names = ["input_ids", "attention_mask"]  # LLaMA takes no token types
        return model, tok

    saved = (language.build_transformer, policy_module.language_hidden_size)
    language.build_transformer = build
    policy_module.language_hidden_size = lambda cfg: config.hidden_size
    try:
        yield
    finally:
        language.build_transformer, policy_module.language_hidden_size = saved


def batches(loader: Any, sampler: Any) -> Iterator[dict[str, Any]]:
    """Batches forever, epoch after epoch (the sampler reshuffles per epoch)."""
    epoch = 0
    while True:
        sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


def train_steps(
    policy: Any,
    loader: Any,
    sampler: Any,
    cfg: AtlasConfig,
    steps: int,
    warmup: int,
    device: torch.device,
) -> dict[str, float]:
    """samples/s of `steps` full train steps after `warmup` ones, and the CUDA peak memory."""
    from atlas.runtime import resolve_precision
    from atlas.training.optim import build_optimizer

    autocast = resolve_precision(cfg.training.mixed_precision, device).autocast
    opt = build_optimizer(policy, cfg, 1, device)  # the trainer's: foreach / fused AdamW
    policy.train()
    stream = batches(loader, sampler)
    samples, start = 0, 0.0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for i in range(warmup + steps):
        if i == warmup:
            _sync(device)
            start = time.perf_counter()
        batch = next(stream)
        with autocast():
            loss, _ = policy(batch)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        samples += len(batch["actions"]) if i >= warmup else 0
    _sync(device)
    elapsed = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return {"samples_per_s": samples / elapsed, "step_ms": 1e3 * elapsed / steps, "peak_gb": peak}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def loader_for(dataset: Any, cfg: AtlasConfig) -> tuple[Any, Any]:
    from atlas.data import build_dataloader
    from atlas.distributed.env import DistInfo
    from atlas.distributed.sampler import ResumableSampler

    sampler = ResumableSampler(len(dataset), DistInfo(), shuffle=True, seed=0, drop_last=False)
    return build_dataloader(dataset, cfg, sampler, train=True), sampler


def online_phase(args: argparse.Namespace, root: Path, device: torch.device) -> tuple[dict, dict]:
    """Train online; returns (result, the trainable state dict on the CPU)."""
    from atlas.data import build_datasets
    from atlas.models.config import policy_config
    from atlas.models.policy import build_policy
    from atlas.runtime import seed_everything

    cfg = bench_config(args, root, cached=False)
    seed_everything(cfg.training.seed)
    train, _, normalizer = build_datasets(cfg)
    policy = build_policy(policy_config(cfg), normalizer).to(device)
    policy.cache_instructions(train.tasks)  # what the trainer does: the LM runs once per text
    loader, sampler = loader_for(train, cfg)
    result = train_steps(policy, loader, sampler, cfg, args.steps, args.warmup, device)
    frozen = ("vggt.", "language_encoder.")
    state = {k: v.cpu() for k, v in policy.state_dict().items() if not k.startswith(frozen)}
    return result, state


def build_phase(args: argparse.Namespace, root: Path, device: torch.device) -> dict[str, Any]:
    from atlas.cache.build import build_feature_cache
    from atlas.distributed.env import DistInfo

    cfg = bench_config(args, root, cached=True)
    result = build_feature_cache(cfg, DistInfo(device=device), progress=False)
    return {
        "samples_per_s": result.samples / result.compute_seconds,
        "seconds": result.seconds,
        "bytes_per_sample": result.bytes_per_sample,
    }


def cached_phase(
    args: argparse.Namespace, root: Path, device: torch.device, state: dict
) -> dict[str, Any]:
    from atlas.cache.build import open_cached_datasets
    from atlas.data import build_datasets
    from atlas.models.config import policy_config
    from atlas.models.policy import build_policy

    cfg = bench_config(args, root, cached=True)
    train, val, normalizer = build_datasets(cfg)
    train, _ = open_cached_datasets(cfg, train, val, device)
    policy = build_policy(policy_config(cfg), normalizer, backbones=False)
    policy.load_state_dict(state, strict=True)  # the detached policy holds exactly these keys
    loader, sampler = loader_for(train, cfg)
    steps = args.steps * args.cached_step_factor
    return train_steps(policy.to(device), loader, sampler, cfg, steps, args.warmup, device)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny data, few steps (CI, < 60 s)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--full", action="store_true", help="VGGT-1B + LLaMA-2-7B-size, random weights")
    p.add_argument(
        "--lm",
        choices=["config", "7b", "tiny"],
        default=None,
        help="language model: the config's (MiniLM), or a random LLaMA (default with --full: 7b)",
    )
    p.add_argument("--size", type=int, help="image side (default: the config's; 224 with --full)")
    p.add_argument("--steps", type=int, default=20, help="timed online steps")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument(
        "--cached-step-factor", type=int, default=5, help="cached steps = factor x steps"
    )
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers, both ways")
    p.add_argument("--store-dtype", choices=["float32", "float16"], default="float16")
    p.add_argument("--root", help="work folder (default: a temporary one, deleted afterwards)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra config override (repeatable)",
    )
    args = p.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.full:
        args.size = args.size or 224
        args.lm = args.lm or "7b"
    if args.quick:
        args.steps, args.warmup = min(args.steps, 4), min(args.warmup, 1)
    return args


def run(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    device = torch.device(args.device)
    lm = random_llama(args.lm) if args.lm in ("7b", "tiny") else contextlib.nullcontext()
    with lm:
        online, state = online_phase(args, root, device)
        if device.type == "cuda":
            torch.cuda.empty_cache()
        build = build_phase(args, root, device)
        cached = cached_phase(args, root, device, state)
    return {"online": online, "build": build, "cached": cached}


def report(args: argparse.Namespace, res: dict[str, Any]) -> dict[str, Any]:
    from atlas.bench.infer import machine

    online, cached, build = res["online"], res["cached"], res["build"]
    speedup = cached["samples_per_s"] / online["samples_per_s"]
    mem_ratio = None
    if online["peak_gb"] and cached["peak_gb"]:
        mem_ratio = cached["peak_gb"] / online["peak_gb"]
    preset = "full (VGGT-1B + LLaMA-2-7B size)" if args.full else "debug"
    size = args.size or "config"
    print(f"feature cache  preset={preset}  size={size}  {machine(args.device)}")
    print(f"{'phase':<14} {'samples/s':>10} {'step ms':>9} {'peak GB':>8}")
    for name, r in (("online train", online), ("cached train", cached)):
        peak = f"{r['peak_gb']:.2f}" if r["peak_gb"] is not None else "-"
        print(f"{name:<14} {r['samples_per_s']:>10.1f} {r['step_ms']:>9.1f} {peak:>8}")
    print(f"{'cache build':<14} {build['samples_per_s']:>10.1f} {'':>9} {'':>8}")
    print(f"speedup {speedup:.1f}x  bytes/sample {build['bytes_per_sample']}", end="")
    print(f"  memory ratio {mem_ratio:.3f}" if mem_ratio is not None else "")
    record = {
        "bench": "cache",
        "preset": preset,
        "size": size,
        "device": args.device,
        "machine": machine(args.device),
        "speedup": speedup,
        "memory_ratio": mem_ratio,
        "bytes_per_sample": build["bytes_per_sample"],
        "store_dtype": args.store_dtype,
        **{k: res[k] for k in ("online", "cached", "build")},
    }
    print(json.dumps(record))
    return record


def main(argv: Sequence[str] | None = None) -> int:
    import logging

    logging.basicConfig(level=logging.WARNING)
    args = parse_args(argv)
    if args.root:
        res = run(args, Path(args.root))
    else:
        with tempfile.TemporaryDirectory(prefix="atlas_bench_cache_") as tmp:
            res = run(args, Path(tmp))
    report(args, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
