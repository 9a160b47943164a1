"""Collectives in one process: process-group start-up, an all-reduce and a DDP step.

    python -m atlas.bench.nccl                # NCCL on the GPU
    python -m atlas.bench.nccl --smoke        # gloo on the CPU, tiny sizes (CI)

A world of one proves that the NCCL library loads, initialises on this driver and runs a
collective and a DistributedDataParallel step (bucketed all-reduce hooked into backward); it does
not measure interconnect bandwidth, which needs several GPUs. The all-reduce figure is the
single-rank time of the call (NCCL's local copy path), reported so a broken or very slow
library shows. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from atlas.bench.roofline import median_seconds


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def single_process_group(device: torch.device) -> Iterator[float]:
    """A world of one (NCCL on CUDA, gloo on the CPU); yields the seconds init took."""
    backend = "nccl" if device.type == "cuda" else "gloo"
    start = time.perf_counter()
    kwargs: dict[str, Any] = {"device_id": device} if device.type == "cuda" else {}
    dist.init_process_group(
        backend, init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1, **kwargs
    )
    try:
        dist.barrier()  # the communicator is built lazily: make init pay for it
        yield time.perf_counter() - start
    finally:
        dist.destroy_process_group()


def ddp_step_ms(device: torch.device, width: int, steps: int) -> float:
    """Median ms of forward + backward + AdamW of a 4-layer MLP under DDP (all-reduced grads)."""
    from torch.nn.parallel import DistributedDataParallel

    model = nn.Sequential(*(nn.Linear(width, width) for _ in range(4))).to(device)
    ddp = DistributedDataParallel(
        model, device_ids=[device.index] if device.index is not None else None
    )
    opt = torch.optim.AdamW(ddp.parameters(), lr=1e-4)
    x = torch.randn(64, width, device=device)

    def step() -> None:
        ddp(x).square().mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return 1e3 * median_seconds(step, device, warmup=2, repeats=steps)


def run(smoke: bool, device: torch.device) -> dict[str, Any]:
    numel, width = (2**16, 64) if smoke else (2**26, 4096)  # 256 MiB of fp32 on a GPU
    with single_process_group(device) as init_s:
        buf = torch.randn(numel, device=device)
        reduce_s = median_seconds(lambda: dist.all_reduce(buf), device, warmup=2, repeats=10)
        ddp_ms = ddp_step_ms(device, width, steps=5)
        backend = dist.get_backend()
    return {
        "bench": "nccl",
        "backend": backend,
        "world_size": 1,
        "init_s": round(init_s, 3),
        "all_reduce": {"bytes": numel * 4, "ms": round(reduce_s * 1e3, 3)},
        "ddp_step_ms": round(ddp_ms, 3),
        "nccl_version": ".".join(map(str, torch.cuda.nccl.version()))
        if device.type == "cuda"
        else None,
        "note": "one GPU: start-up and correctness only, no interconnect bandwidth",
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="gloo on the CPU, tiny sizes")
    p.add_argument("--device", default="cuda:0" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    device = torch.device("cpu" if args.smoke and args.device == "cpu" else args.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    record = run(args.smoke, device)
    print(
        f"{record['backend']}: init {record['init_s']} s, all-reduce "
        f"{record['all_reduce']['ms']} ms, DDP step {record['ddp_step_ms']} ms"
    )
    print(json.dumps(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
