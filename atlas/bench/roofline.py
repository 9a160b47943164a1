"""The machine and its two ceilings: a large bf16 matrix product and a device-to-device copy.

    python -m atlas.bench.roofline                 # CUDA when present: 8192^3 bf16, 4 GiB copy
    python -m atlas.bench.roofline --smoke         # tiny sizes (CPU in CI)

Every other GPU number is read against these: an H200 runs the 8192^3 bf16 product at about
790 TFLOP/s on random data and copies at about 4.3 TB/s (bytes read + bytes written). A reading far
below them means the card, its clocks or the software stack is off, and no other number of that
run can be trusted. Inputs are random (zeros run faster than real data). Times are medians over
CUDA events (wall clock on the CPU) after warm-up. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

# Dense bf16 tensor-core peaks from the vendors' datasheets (SXM parts), for MFU.
BF16_PEAK_TFLOPS = {"H200": 989.4, "H100": 989.4, "A100": 312.0, "L40S": 362.1, "A10": 125.0}
# What a healthy card of that name reaches in this benchmark (measured elsewhere, see module doc).
EXPECTED = {"H200": {"matmul_tflops": 790.0, "copy_tbps": 4.3}}


def bf16_peak_tflops(name: str) -> float | None:
    """Datasheet dense bf16 peak of a GPU named `name` (None when the name is not known)."""
    return next((peak for key, peak in BF16_PEAK_TFLOPS.items() if key in name), None)


def environment() -> dict[str, Any]:
    """Python, torch, CUDA and the GPU (name, memory, driver, SMs) of this process."""
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "host": f"{platform.machine()}, {torch.get_num_threads()} torch threads",
        "gpu": None,
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env["gpu"] = {
            "name": props.name,
            "count": torch.cuda.device_count(),
            "memory_gib": round(props.total_memory / 2**30, 1),
            "sm_count": props.multi_processor_count,
            "capability": f"{props.major}.{props.minor}",
            "driver": _driver_version(),
            "bf16_peak_tflops": bf16_peak_tflops(props.name),
        }
    return env


def _driver_version() -> str | None:
    try:  # nvidia-ml-py is optional; the driver version is a nicety, not a requirement
        import pynvml

        pynvml.nvmlInit()
        version = pynvml.nvmlSystemGetDriverVersion()
        return version.decode() if isinstance(version, bytes) else str(version)
    except Exception:
        return None


def median_seconds(fn: Callable[[], Any], device: torch.device, warmup: int, repeats: int) -> float:
    """Median time of fn() over `repeats` runs after `warmup` (CUDA events on a GPU)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def matmul_tflops(n: int, device: torch.device, dtype: torch.dtype, repeats: int) -> float:
    """TFLOP/s of an n x n x n product on random inputs (2 n^3 FLOPs)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)
    seconds = median_seconds(lambda: torch.mm(a, b, out=out), device, 3, repeats)
    return 2 * n**3 / seconds / 1e12


def copy_tbps(nbytes: int, device: torch.device, repeats: int) -> float:
    """TB/s of a device-to-device copy, counting bytes read plus bytes written."""
    src = torch.randint(0, 255, (nbytes,), dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    seconds = median_seconds(lambda: dst.copy_(src), device, 3, repeats)
    return 2 * nbytes / seconds / 1e12


def _sig(x: float) -> float:
    return float(f"{x:.4g}")


def run(smoke: bool, device: torch.device) -> dict[str, Any]:
    env = environment()
    n, nbytes = (256, 2**22) if smoke else (8192, 4 * 2**30)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    record: dict[str, Any] = {"bench": "roofline", "device": str(device), "env": env}
    record["matmul"] = {
        "n": n,
        "dtype": str(dtype).removeprefix("torch."),
        "tflops": _sig(matmul_tflops(n, device, dtype, 10)),
    }
    record["copy"] = {"bytes": nbytes, "tbps": _sig(copy_tbps(nbytes, device, 10))}
    name = (env["gpu"] or {}).get("name", "")
    record["expected"] = next((v for k, v in EXPECTED.items() if k in name), None)
    return record


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="tiny sizes (seconds on a CPU)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    record = run(args.smoke, torch.device(args.device))
    print(f"matmul {record['matmul']['tflops']} TFLOP/s, copy {record['copy']['tbps']} TB/s")
    print(json.dumps(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
