"""`atlas.bench.serve --quick` runs (export, in-process calls, `atlas serve`), prints its JSON."""

from __future__ import annotations

import json
import subprocess
import sys


def test_serve_benchmark_quick_mode() -> None:
    command = [sys.executable, "-m", "atlas.bench.serve", "--quick"]
    out = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    record = json.loads(out.stdout.strip().splitlines()[-1])
    assert record["bench"] == "serve" and record["iters"] == 5
    for key in ("in_process", "round_trip", "server_predict", "overhead"):
        assert record[key]["p50_ms"] > 0
    # The served policy is the in-process one: the same actions (one torch thread each side).
    assert record["max_action_difference"] <= 1e-5
