"""Latency of `policy.predict_action` (one robot observation -> one action chunk), random weights.

    python -m atlas.bench.infer --quick                       # CPU, debug preset, 224 px
    python -m atlas.bench.infer --device cuda --preset vggt_1b --dtype bf16

Settings: 1 and 2 cameras at 224 px, action chunks of 1 and 8. Each call is what a closed-loop
rollout pays per replanning step: resize + orientation of the raw 128 x 128 frames, VGGT, the
geometry/fusion/action head, unnormalization and the copy back to the CPU (which synchronises
CUDA). The instruction is encoded once and cached, as in a rollout (a frozen language model runs
once per episode, not per step). Prints a table, then one JSON line.

Modes (`--modes`, comma-separated): `eager`; `graph`, predict_chunk replayed from a CUDA graph
(atlas.models.cuda_graph; batch 1 is launch-bound, this removes the launch gaps); `compile`,
each transformer block under torch.compile(mode="reduce-overhead") (Inductor + CUDA graphs;
`--compile-backend eager` only traces, for a quick check of the path). `--vggt-dtype bf16` stores
the frozen backbone's weights in bf16, so autocast does not re-cast 1.2 B fp32 weights per call.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from atlas.config import load_config
from atlas.config.schema import AtlasConfig

CAMERAS = ["agentview_rgb", "eye_in_hand_rgb"]
RAW_SIZE = 128  # LIBERO's stored frame size
INSTRUCTION = "put the black bowl on the plate"
MODES = ("eager", "graph", "compile")


def identity_normalizer() -> Any:
    """A Normalizer that leaves values unchanged (statistics do not change the latency)."""
    from atlas.data.normalization import Normalizer

    def group(dim: int) -> dict[str, list[float]]:
        zeros, ones = [0.0] * dim, [1.0] * dim
        return {
            "mean": zeros,
            "std": ones,
            "min": [-1.0] * dim,
            "max": ones,
            "q01": [-1.0] * dim,
            "q99": ones,
        }

    return Normalizer({"action": group(7), "proprio": group(8), "num_samples": 1}, "none")


def bench_config(
    preset: str, cameras: int, chunk: int, size: int, extra: Sequence[str] = ()
) -> AtlasConfig:
    """The debug config (CPU-sized fusion/head) with the benchmark's preset, cameras and chunk."""
    from atlas.config.arguments import packaged_config

    overrides = [
        f"data.image_size={size}",
        f"data.cameras=[{','.join(CAMERAS[:cameras])}]",
        f"model.action_head.chunk_size={chunk}",
        "data.history=1",
    ]
    if preset != "debug":
        overrides += [f"model.vggt.preset={preset}", "model.vggt.layers=[-1]"]
    return load_config(packaged_config("debug.yaml"), [*overrides, *extra])


def observation(cfg: AtlasConfig, rng: np.random.Generator) -> dict[str, Any]:
    images = {
        cam: rng.integers(0, 256, (RAW_SIZE, RAW_SIZE, 3), dtype=np.uint8)
        for cam in cfg.data.cameras
    }
    state = rng.standard_normal(8).astype(np.float32)
    return {"images": images, "instruction": INSTRUCTION, "state": state}


def time_calls(
    policy: Any, cfg: AtlasConfig, iters: int, warmup: int, autocast: Any
) -> dict[str, float]:
    """p50 / p90 / p99 / mean latency in ms of `iters` predict_action calls after `warmup`."""
    rng = np.random.default_rng(0)
    times = []
    for i in range(warmup + iters):
        obs = observation(cfg, rng)
        t0 = time.perf_counter()
        with autocast():
            action = policy.predict_action(obs)  # returns numpy: the GPU work is finished
        elapsed = time.perf_counter() - t0
        if i >= warmup:
            times.append(elapsed * 1e3)
        assert action.shape == (cfg.model.action_head.chunk_size, 7)
    arr = np.asarray(times)
    return {
        "p50_ms": float(np.percentile(arr, 50)),
        "p90_ms": float(np.percentile(arr, 90)),
        "p99_ms": float(np.percentile(arr, 99)),
        "mean_ms": float(arr.mean()),
    }


def run_setting(args: argparse.Namespace, cameras: int, chunk: int, mode: str) -> dict[str, Any]:
    from atlas.models.config import policy_config
    from atlas.models.policy import build_policy

    cfg = bench_config(args.preset, cameras, chunk, args.size, args.set)
    torch.manual_seed(0)
    device = torch.device(args.device)
    policy = build_policy(policy_config(cfg), identity_normalizer()).to(device).eval()
    if args.vggt_dtype == "bf16":
        policy.vggt.to(torch.bfloat16)
    policy.reset()
    if device.type == "cuda" and args.dtype == "bf16":

        def autocast() -> Any:
            return torch.autocast("cuda", dtype=torch.bfloat16)
    else:
        autocast = contextlib.nullcontext
    row: dict[str, Any] = {"cameras": cameras, "chunk": chunk, "size": args.size, "mode": mode}
    start = time.perf_counter()
    with autocast():
        accelerate(policy, cfg, mode, args.compile_backend)
    row["setup_s"] = time.perf_counter() - start
    row |= time_calls(policy, cfg, args.iters, args.warmup, autocast)
    del policy
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


def accelerate(policy: Any, cfg: AtlasConfig, mode: str, backend: str) -> None:
    """Replace `policy.predict_chunk` by the mode's faster version (eager: leave it)."""
    if mode == "eager":
        return
    if mode == "compile":
        # Per block, as training.compile: a few graphs for ~72 blocks instead of one huge graph
        # (the instruction cache and the batch dict stay eager); reduce-overhead adds CUDA graphs.
        from atlas.distributed.compile import compile_blocks

        compile_blocks(
            policy,
            backend=backend,
            **({"mode": "reduce-overhead"} if backend == "inductor" else {}),
        )
        return
    from atlas.models.cuda_graph import GraphedPredictChunk

    eager = type(policy).predict_chunk.__get__(policy)

    # Capture with the batch predict_action builds for this observation layout.
    obs = observation(cfg, np.random.default_rng(1))
    captured: dict[str, Any] = {}

    def grab(batch: dict[str, Any]) -> Any:
        captured.update(batch)
        return eager(batch)

    policy.predict_chunk = grab
    policy.predict_action(obs)
    policy.reset()
    policy.predict_chunk = GraphedPredictChunk(policy, captured)


def machine(device: str) -> str:
    import platform

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(0)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="few iterations (CI)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--preset", default="debug", help="debug (the debug.yaml VGGT) or a VGGT preset")
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="autocast on CUDA")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--cameras", default="1,2")
    p.add_argument("--chunks", default="1,8")
    p.add_argument("--iters", type=int, default=50)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--modes", default="eager", help="comma-separated: eager, graph, compile")
    p.add_argument("--compile-backend", default="inductor", help="torch.compile backend")
    p.add_argument(
        "--vggt-dtype",
        choices=["fp32", "bf16"],
        default="fp32",
        help="dtype of the frozen VGGT weights",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra config override (repeatable)",
    )
    args = p.parse_args(argv)
    args.modes = args.modes.split(",")
    bad = [m for m in args.modes if m not in MODES]
    if bad:
        p.error(f"--modes: unknown {bad}; choose from {', '.join(MODES)}")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.iters, args.warmup = min(args.iters, 8), min(args.warmup, 2)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    rows = [
        run_setting(args, int(c), int(h), mode)
        for mode in args.modes
        for c in args.cameras.split(",")
        for h in args.chunks.split(",")
    ]
    name = machine(args.device)
    vggt = bench_config(args.preset, 1, 1, args.size, args.set).model.vggt.preset
    print(f"predict_action latency  config={args.preset} vggt={vggt} dtype={args.dtype}  {name}")
    print(
        f"{'mode':>7} {'cameras':>7} {'chunk':>5} {'size':>5} {'p50 ms':>9} {'p90 ms':>9} "
        f"{'p99 ms':>9} {'mean ms':>9}"
    )
    for r in rows:
        print(
            f"{r['mode']:>7} {r['cameras']:>7} {r['chunk']:>5} {r['size']:>5} "
            f"{r['p50_ms']:>9.2f} {r['p90_ms']:>9.2f} {r['p99_ms']:>9.2f} {r['mean_ms']:>9.2f}"
        )
    record = {
        "bench": "infer",
        "preset": args.preset,
        "vggt": vggt,
        "device": args.device,
        "machine": name,
        "dtype": args.dtype,
        "vggt_dtype": args.vggt_dtype,
        "iters": args.iters,
        "results": rows,
    }
    print(json.dumps(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
