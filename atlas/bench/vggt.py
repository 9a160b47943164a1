"""Forward time and peak memory of the VGGT aggregator (random weights), per (frames, size).

    python -m atlas.bench.vggt --quick                      # tiny preset, 1 frame, 224 px
    python -m atlas.bench.vggt --preset vggt_1b --device cuda --frames 1,2,4,8 --sizes 518

Prints a table, then one JSON line. Memory is the peak of tensor memory allocated by the forward
on top of what existed before it (weights and inputs excluded):
* CUDA: torch.cuda.max_memory_allocated() minus the allocation before the forward.
* CPU: there is no allocator statistic, so tensors are tracked with a TorchDispatchMode: every
  storage created by an aten op counts from creation until its last tensor dies. Scratch memory
  inside a kernel (e.g. SDPA or GEMM workspaces) is not seen, so this is a slight lower bound.
  The process peak RSS (getrusage, includes weights and libraries) is reported beside it.
Official figures (VGGT README: one H100, 518 px, full model, Flash Attention 3) are shown for
comparison; they are not the same measurement on CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
import weakref
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import replace
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from atlas.models.vggt import Aggregator, build_vggt, get_vggt_preset

OFFICIAL_H100_518 = {
    1: {"time_s": 0.04, "peak_mem_gb": 1.88},
    2: {"time_s": 0.05, "peak_mem_gb": 2.07},
    8: {"time_s": 0.11, "peak_mem_gb": 3.23},
}
GB = 1024**3


class LiveTensorPeak(TorchDispatchMode):
    """Peak bytes of tensor storages created inside the context and still referenced.

    Storages that existed before (weights, inputs: pass them as `existing`) are never counted,
    even when an op returns a view of them.
    """

    def __init__(self, existing: Sequence[torch.Tensor] = ()) -> None:
        super().__init__()
        self._skip = {t.untyped_storage().data_ptr() for t in existing}
        self._refs: dict[int, int] = {}
        self._bytes: dict[int, int] = {}
        self.live = 0
        self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                self._track(t)
        return out

    def _track(self, t: torch.Tensor) -> None:
        storage = t.untyped_storage()
        key = storage.data_ptr()
        if key == 0 or key in self._skip:
            return
        if key not in self._refs:
            self._refs[key], self._bytes[key] = 0, storage.nbytes()
            self.live += storage.nbytes()
            self.peak = max(self.peak, self.live)
        self._refs[key] += 1
        weakref.finalize(t, self._release, key)

    def _release(self, key: int) -> None:
        self._refs[key] -= 1
        if self._refs[key] == 0:
            self.live -= self._bytes.pop(key)
            del self._refs[key]


def build_aggregator(preset: str, device: torch.device) -> Aggregator:
    """The preset's aggregator (heads disabled), random N(0, 0.02) weights, eval mode."""
    config = replace(
        get_vggt_preset(preset), enable_camera=False, enable_depth=False, enable_point=False
    )
    # Meta build + to_empty + a plain fill avoids initialising 1B parameters twice on CPU.
    aggregator = build_vggt(config, device="meta").aggregator.to_empty(device=device)
    with torch.no_grad():
        for p in aggregator.parameters():
            p.normal_(0.0, 0.02)
    aggregator.init_non_persistent_buffers(device)
    return aggregator.eval()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_forward(
    agg: Aggregator, images: torch.Tensor, autocast, warmup: int, repeats: int
) -> float:
    """Median wall time (s) of one aggregator forward over `repeats` runs after `warmup`."""
    times = []
    for i in range(warmup + repeats):
        _sync(images.device)
        start = time.perf_counter()
        with torch.inference_mode(), autocast():
            agg(images)
        _sync(images.device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_forward_memory(agg: Aggregator, images: torch.Tensor, autocast) -> float:
    """Peak bytes allocated by one forward above the pre-forward allocation (see module doc)."""
    if images.device.type == "cuda":
        _sync(images.device)
        torch.cuda.reset_peak_memory_stats(images.device)
        base = torch.cuda.memory_allocated(images.device)
        with torch.inference_mode(), autocast():
            agg(images)
        _sync(images.device)
        return torch.cuda.max_memory_allocated(images.device) - base
    existing = [*agg.parameters(), *agg.buffers(), images]
    with torch.inference_mode(), autocast(), LiveTensorPeak(existing) as tracker:
        agg(images)
    return tracker.peak


def process_peak_rss_gb() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GB


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device)
    dtype = args.dtype if args.dtype != "auto" else ("bf16" if device.type == "cuda" else "fp32")

    def autocast():
        if dtype == "fp32":
            return nullcontext()
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)

    agg = build_aggregator(args.preset, device)
    n_params = sum(p.numel() for p in agg.parameters())
    results = []
    for size in args.sizes:
        for frames in args.frames:
            images = torch.rand(1, frames, 3, size, size, device=device)
            seconds = time_forward(agg, images, autocast, args.warmup, args.repeats)
            peak = peak_forward_memory(agg, images, autocast)
            row = {"frames": frames, "size": size, "time_s": round(seconds, 4)}
            row |= {"peak_mem_gb": round(peak / GB, 4), "peak_mem_mb": round(peak / 2**20, 1)}
            row["proc_peak_rss_gb"] = None
            if device.type == "cpu":
                row["proc_peak_rss_gb"] = round(process_peak_rss_gb(), 3)
            if args.preset == "vggt_1b" and size == 518 and frames in OFFICIAL_H100_518:
                official = OFFICIAL_H100_518[frames]
                row["official_h100"] = official
                row["time_ratio"] = round(seconds / official["time_s"], 3)
                row["mem_ratio"] = round(peak / GB / official["peak_mem_gb"], 3)
            results.append(row)
            print_row(row)
    return {
        "bench": "vggt_aggregator_forward",
        "preset": args.preset,
        "aggregator_params": n_params,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        # CPU timings are only meaningful on an idle machine: record how busy it was.
        "loadavg_1m": round(os.getloadavg()[0], 2),
        "dtype": dtype,
        "memory": "cuda max_memory_allocated - baseline"
        if device.type == "cuda"
        else "live tensor storages via TorchDispatchMode (excl. weights/inputs, kernel scratch)",
        "results": results,
        "official_h100_518px": OFFICIAL_H100_518,
    }


def print_row(row: dict[str, Any]) -> None:
    official = row.get("official_h100")
    ref = f"{official['time_s']:.2f} s, {official['peak_mem_gb']:.2f} GB" if official else ""
    rss = row["proc_peak_rss_gb"]
    rss_text = f"{rss:>9.2f}" if rss is not None else f"{'-':>9}"
    print(
        f"{row['frames']:>6} {row['size']:>5} {row['time_s']:>9.4f} {row['peak_mem_mb']:>9.1f} "
        f"{rss_text}   {ref}",
        flush=True,
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="VGGT aggregator forward benchmark")
    parser.add_argument("--preset", default="vggt_1b", help="key of VGGT_PRESETS")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--frames", default="1,2,4,8", help="comma-separated frame counts")
    parser.add_argument("--sizes", default="224,518", help="comma-separated square image sizes")
    parser.add_argument(
        "--dtype",
        choices=("auto", "fp32", "bf16"),
        default="auto",
        help="auto: bf16 autocast on CUDA (as the official figures), fp32 on CPU",
    )
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="tiny preset, 1 frame, 224 px")
    args = parser.parse_args(argv)
    if args.quick:
        args.preset, args.frames, args.sizes = "tiny", "1", "224"
    args.frames = [int(v) for v in str(args.frames).split(",")]
    args.sizes = [int(v) for v in str(args.sizes).split(",")]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    print(f"VGGT aggregator forward, preset={args.preset}, device={args.device}, random weights")
    print(f"{'frames':>6} {'size':>5} {'time_s':>9} {'peak_mb':>9} {'rss_gb':>9}   official H100")
    summary = run(args)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
