"""`python -m atlas.bench.data --format lerobot` runs end to end in a tiny setting."""

from __future__ import annotations

import json
import subprocess
import sys


def test_lerobot_mode_prints_its_json_line() -> None:
    args = ["--format", "lerobot", "--quick", "--workers", "0", "--batches", "2"]
    args += ["--batch-size", "4", "--image-size", "56", "--source-size", "64"]
    out = subprocess.run(
        [sys.executable, "-m", "atlas.bench.data", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    record = json.loads(out.stdout.strip().splitlines()[-1])
    assert record["bench"] == "data_lerobot"
    rates = record["samples_per_s"]
    assert set(rates) == {"av1 video", "png images"}
    assert all(r["atlas"]["0"] > 0 and r["lerobot"] == {} for r in rates.values())
