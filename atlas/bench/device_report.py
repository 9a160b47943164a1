"""Targets, verdicts and the Markdown report of `python -m atlas.bench.device`.

Pure functions over the JSON the device check writes (no torch), so a report can be rendered,
and several runs merged, on any machine:

    python -m atlas.bench.device --render-md run1/device_check.json [run2/device_check.json]

Verdicts: `met` / `missed` (a target and a number), `measured` (numbers, no target), `ok`
(a check that passed), `failed` / `timeout` / `skipped` (the part produced no number; its
`reason` says why).
"""

from __future__ import annotations

from typing import Any

# Official VGGT-1B aggregator, one H100, 518 px, bf16, FlashAttention 3 (VGGT README).
OFFICIAL_VGGT = {1: (0.04, 1.88), 2: (0.05, 2.07), 8: (0.11, 3.23)}
INFER_TARGET_MS = 10.0  # per chunk of 8, 2 cameras, 224 px, bf16
CACHE_SPEEDUP, CACHE_MEMORY = 5.0, 1 / 3
ROOFLINE_FRACTION = 0.9  # of the figures an H200 of this kind reached (see atlas.bench.roofline)

TARGETS = {
    "roofline": "sanity: >= 90% of the 8192^3 bf16 matmul (about 790 TFLOP/s) and copy (about "
    "4.3 TB/s) rates an H200 reaches",
    "nccl": "NCCL initialises, all-reduces and runs a DDP step (one GPU: no bandwidth figure)",
    "gpu_tests": "every `gpu`-marked test passes",
    "vggt": "VGGT-1B, bf16, 518 px: time <= official (0.04 / 0.05 / 0.11 s at 1 / 2 / 8 frames); "
    "memory beside 1.88 / 2.07 / 3.23 GB",
    "infer": f"predict_action, VGGT-1B, bf16, 2 cameras, 224 px, chunk 8: p50 <= "
    f"{INFER_TARGET_MS:g} ms",
    "cache": f"VGGT-1B + LLaMA-2-7B-size step: cached >= {CACHE_SPEEDUP:g}x online samples/s, "
    "peak memory <= 1/3",
    "train": "vggt_1b: samples/s, peak memory, MFU per strategy and compile setting (no target)",
}


def verdict(name: str, part: dict[str, Any]) -> tuple[str, str]:
    """(verdict, one-line summary of the numbers) for part `name` of a device-check record."""
    if part.get("status") != "ok":
        return part.get("status", "failed"), part.get("reason", "")
    judge = JUDGES.get(name.split(":")[0], _measured)
    return judge(part["result"])


def _measured(result: dict[str, Any]) -> tuple[str, str]:
    return "measured", ""


def _roofline(r: dict[str, Any]) -> tuple[str, str]:
    text = f"matmul {r['matmul']['tflops']:g} TFLOP/s, copy {r['copy']['tbps']:g} TB/s"
    expected = r.get("expected")
    if not expected:
        return "measured", text + " (no reference for this device)"
    ok = (
        r["matmul"]["tflops"] >= ROOFLINE_FRACTION * expected["matmul_tflops"]
        and r["copy"]["tbps"] >= ROOFLINE_FRACTION * expected["copy_tbps"]
    )
    return ("met" if ok else "missed"), text


def _nccl(r: dict[str, Any]) -> tuple[str, str]:
    version = f" {r['nccl_version']}" if r.get("nccl_version") else ""
    text = (
        f"{r['backend']}{version}: init {r['init_s']:g} s, all-reduce "
        f"{r['all_reduce']['ms']:g} ms, DDP step {r['ddp_step_ms']:g} ms"
    )
    return "ok", text


def _gpu_tests(r: dict[str, Any]) -> tuple[str, str]:
    counts = {k: n for k, n in r["counts"].items() if not k.startswith("error")}
    text = ", ".join(f"{n} {k}" for k, n in counts.items()) or "no tests ran"
    if r.get("collection_errors"):
        text += f"; {len(r['collection_errors'])} modules not importable (no GPU tests in them)"
    if r["failures"]:
        return "missed", text + "; failed: " + ", ".join(r["failures"][:5])
    return ("ok" if counts.get("passed") else "measured"), text


def _vggt(r: dict[str, Any]) -> tuple[str, str]:
    rows = [row for row in r["results"] if "official_h100" in row]
    parts = [
        f"{row['frames']} fr {row['time_s']:g} s ({row['time_ratio']:g}x), "
        f"{row['peak_mem_gb']:.2f} GB ({row['mem_ratio']:g}x)"
        for row in rows
    ]
    if not rows:
        text = "; ".join(f"{x['frames']} fr {x['size']} px {x['time_s']:g} s" for x in r["results"])
        return "measured", text + " (no official figure for this setting)"
    return ("met" if all(row["time_ratio"] <= 1 for row in rows) else "missed"), "; ".join(parts)


def _infer(r: dict[str, Any]) -> tuple[str, str]:
    rows = [x for x in r["results"] if x["cameras"] == 2 and x["chunk"] == 8]
    text = "; ".join(
        f"{x['mode']} p50 {x['p50_ms']:.2f} / p99 {x['p99_ms']:.2f} ms" for x in r["results"]
    )
    if r.get("vggt") != "vggt_1b" or r.get("dtype") != "bf16" or not rows:
        return "measured", text
    best = min(x["p50_ms"] for x in rows)
    return ("met" if best <= INFER_TARGET_MS else "missed"), text


def _cache(r: dict[str, Any]) -> tuple[str, str]:
    ratio = r.get("memory_ratio")
    online, cached = r["online"]["samples_per_s"], r["cached"]["samples_per_s"]
    text = f"online {online:.1f} -> cached {cached:.1f} samples/s ({r['speedup']:.1f}x)"
    if ratio is not None:
        text += (
            f"; peak {r['online']['peak_gb']:.1f} -> {r['cached']['peak_gb']:.1f} GiB ({ratio:.3f})"
        )
    if not r["preset"].startswith("full") or ratio is None:
        return "measured", text
    met = r["speedup"] >= CACHE_SPEEDUP and ratio <= CACHE_MEMORY
    return ("met" if met else "missed"), text


def _train(r: dict[str, Any]) -> tuple[str, str]:
    def one(row: dict[str, Any]) -> str:
        mfu = f", MFU {100 * row['mfu']:.1f}%" if row.get("mfu") is not None else ""
        mem = f", {row['peak_mem_gib']:.1f} GiB" if row.get("peak_mem_gib") is not None else ""
        compiled = "compiled" if row["compile"] else "eager"
        return (
            f"{row['strategy']} {compiled}: {row['compute_samples_per_s']:.1f} samples/s{mem}{mfu}"
        )

    return "measured", "; ".join(one(row) for row in r["rows"])


JUDGES = {
    "roofline": _roofline,
    "nccl": _nccl,
    "gpu_tests": _gpu_tests,
    "vggt": _vggt,
    "infer": _infer,
    "cache": _cache,
    "train": _train,
}


def merge(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Several device-check records as one: later runs replace a part only where they ran it."""
    merged = dict(records[0])
    merged["parts"] = dict(records[0]["parts"])
    for record in records[1:]:
        for name, part in record["parts"].items():
            if part.get("status") == "ok" or name not in merged["parts"]:
                merged["parts"][name] = part
        merged["runs"] = [*merged.get("runs", [records[0]["started"]]), record["started"]]
    return merged


def render_markdown(record: dict[str, Any]) -> str:
    """The report: environment, then one row per part with its target and verdict."""
    env = record.get("env") or {}
    gpu = env.get("gpu") or {}
    kind = "smoke, tiny sizes: verdicts do not apply" if record["smoke"] else "full"
    lines = [
        f"# Device check ({kind})",
        "",
        f"- started {record['started']}, {record.get('elapsed_s', 0):.0f} s",
        _gpu_line(gpu, record.get("nvidia_smi")),
        f"- torch {env.get('torch', '-')}, CUDA {env.get('cuda') or '-'}, "
        f"Python {env.get('python', '-')}, {env.get('host', '')}",
        f"- packages: {_packages(record['packages'])}",
        "- several GPUs were not available: multi-GPU scaling and NCCL bandwidth are not measured",
        "",
        "| part | target | verdict | numbers | s |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, part in record["parts"].items():
        mark, text = verdict(name, part)
        target = TARGETS.get(name.split(":")[0], "")
        seconds = f"{part.get('seconds', 0):.0f}"
        lines.append(f"| {name} | {target} | **{mark}** | {_cell(text)} | {seconds} |")
    return "\n".join(lines) + "\n"


def _gpu_line(gpu: dict[str, Any], smi: str | None) -> str:
    if not gpu:  # the roofline part did not run: nvidia-smi's view, if any
        return f"- GPU: {f'nvidia-smi: {smi}' if smi else 'none'}"
    return (
        f"- GPU: {gpu['name']} ({gpu['memory_gib']} GiB, compute {gpu['capability']}, "
        f"{gpu['sm_count']} SMs, driver {gpu['driver'] or '-'}, {gpu['count']} visible)"
    )


def _packages(versions: dict[str, str | None]) -> str:
    return ", ".join(f"{name} {version or 'missing'}" for name, version in versions.items())


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
