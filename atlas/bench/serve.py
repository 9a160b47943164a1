"""What serving costs: `atlas serve` round trips on loopback against in-process `predict_action`.

    python -m atlas.bench.serve                          # the debug policy, CPU, 200 calls each
    python -m atlas.bench.serve --quick                  # 5 calls each (CI)
    python -m atlas.bench.serve --cameras 2 --raw-size 256 --iters 500

The debug policy (atlas/configs/debug.yaml, random weights, identity normalization) is exported,
loaded back in this process and served by `atlas serve` in a child process on 127.0.0.1, both with
the same torch thread count. The same observations (raw frames of --raw-size, an 8-value state)
go to `policy.predict_action` directly and through openpi-client's `WebsocketClientPolicy.infer`.
Overhead = round trip - the server's own `predict_action` time (its reply's
`server_timing.infer_ms`), per call: msgpack packing both ways, the websocket frames, the hop to
the policy thread. Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from atlas.bench.infer import CAMERAS, INSTRUCTION, identity_normalizer

TARGET_OVERHEAD_MS = 2.0


def export_debug_policy(path: Path, cameras: int) -> None:
    """The debug config's policy with random weights, saved with save_pretrained."""
    from atlas.config import load_config
    from atlas.config.arguments import packaged_config
    from atlas.models.config import policy_config
    from atlas.models.policy import build_policy

    overrides = [f"data.cameras=[{','.join(CAMERAS[:cameras])}]"]
    cfg = load_config(packaged_config("debug.yaml"), overrides)
    torch.manual_seed(0)
    build_policy(policy_config(cfg), identity_normalizer()).save_pretrained(path)


def make_observations(n: int, cameras: int, size: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(0)
    return [
        {
            "images": {
                cam: rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                for cam in CAMERAS[:cameras]
            },
            "instruction": INSTRUCTION,
            "state": rng.standard_normal(8).astype(np.float32),
        }
        for _ in range(n)
    ]


def time_calls(call: Callable[[dict[str, Any]], Any], observations: list[dict], warmup: int):
    """(ms per call, results) for the calls after the first `warmup`."""
    times, results = [], []
    for i, obs in enumerate(observations):
        start = time.perf_counter()
        out = call(obs)
        if i >= warmup:
            times.append((time.perf_counter() - start) * 1e3)
            results.append(out)
    return np.asarray(times), results


def percentiles(ms: np.ndarray) -> dict[str, float]:
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}


def run(args: argparse.Namespace) -> dict[str, Any]:
    from openpi_client.websocket_client_policy import WebsocketClientPolicy

    from atlas.models.policy import AtlasVLAPolicy
    from atlas.serving.launch import served

    torch.set_num_threads(args.threads)
    observations = make_observations(args.warmup + args.iters, args.cameras, args.raw_size)
    with tempfile.TemporaryDirectory(prefix="atlas-bench-serve-") as tmp:
        export = Path(tmp) / "debug"
        export_debug_policy(export, args.cameras)
        policy = AtlasVLAPolicy.from_pretrained(export).eval()
        local_ms, local = time_calls(policy.predict_action, observations, args.warmup)
        del policy
        with served(export, "--threads", str(args.threads), log_dir=tmp) as server:
            with warnings.catch_warnings():  # openpi-client's connect() outside a `with`
                warnings.simplefilter("ignore", DeprecationWarning)
                client = WebsocketClientPolicy(server.url)
            remote_ms, replies = time_calls(client.infer, observations, args.warmup)
    infer_ms = np.asarray([r["server_timing"]["infer_ms"] for r in replies])
    max_diff = max(float(np.abs(r["actions"] - a).max()) for r, a in zip(replies, local))
    return {
        "bench": "serve",
        "policy": "debug",
        "cameras": args.cameras,
        "raw_size": args.raw_size,
        "iters": args.iters,
        "threads": args.threads,
        "in_process": percentiles(local_ms),
        "round_trip": percentiles(remote_ms),
        "server_predict": percentiles(infer_ms),
        "overhead": percentiles(remote_ms - infer_ms),
        "p50_difference_ms": float(np.percentile(remote_ms, 50) - np.percentile(local_ms, 50)),
        "max_action_difference": max_diff,
        "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores",
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def print_table(result: dict[str, Any]) -> None:
    print(f"{'':<34}{'p50 ms':>10}{'p99 ms':>10}")
    rows = (
        ("in-process predict_action", "in_process"),
        ("openpi-client round trip", "round_trip"),
        ("  of which server predict_action", "server_predict"),
        ("  overhead (round trip - predict)", "overhead"),
    )
    for label, key in rows:
        print(f"{label:<34}{result[key]['p50_ms']:>10.3f}{result[key]['p99_ms']:>10.3f}")
    ok = result["overhead"]["p50_ms"] <= TARGET_OVERHEAD_MS
    print(
        f"p50 overhead {result['overhead']['p50_ms']:.3f} ms "
        f"(target <= {TARGET_OVERHEAD_MS} ms: {'met' if ok else 'NOT met'}); round-trip p50 - "
        f"in-process p50 = {result['p50_difference_ms']:.3f} ms; actions differ by at most "
        f"{result['max_action_difference']:.1e}; load average {result['load_average']}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iters", type=int, default=200, help="timed calls per side")
    p.add_argument("--warmup", type=int, default=20, help="untimed calls first")
    p.add_argument("--cameras", type=int, choices=[1, 2], default=1, help="1: debug.yaml's")
    p.add_argument("--raw-size", type=int, default=128, help="frame size sent (LIBERO: 128)")
    p.add_argument("--threads", type=int, default=1, help="torch threads, both sides")
    p.add_argument("--quick", action="store_true", help="5 timed calls, 2 warm-up (CI)")
    args = p.parse_args(argv)
    if args.quick:
        args.iters, args.warmup = 5, 2
    result = run(args)
    print_table(result)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
