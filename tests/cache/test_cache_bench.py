"""The cache and inference benchmarks run in their short CI mode and print their JSON line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


@pytest.mark.parametrize("module", ["atlas.bench.cache", "atlas.bench.infer"])
def test_benchmark_quick_mode(module: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", module, "--quick"],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    record = json.loads(out.stdout.strip().splitlines()[-1])
    assert record["bench"] == module.rsplit(".", 1)[1]
    if module.endswith("cache"):
        assert record["speedup"] > 0 and record["bytes_per_sample"] > 0
    else:
        settings = {(r["cameras"], r["chunk"]) for r in record["results"]}
        assert settings == {(1, 1), (1, 8), (2, 1), (2, 8)}
